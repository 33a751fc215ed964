/* Unit tests of the DE maths (src/de.c) against small cases computed by hand, and of the
 * number format against Python's repr. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/de.h"

static int failures = 0;
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)
#define NEAR(a, b) CHECK(fabs((a) - (double)(b)) <= 1e-12 * (1 + fabs((double)(b))))

static void test_vanilla(void) {
    /* gene 0: 1>0, 3>4 no, 2>1 -> 2/3; gene 1: 2>3 no, 1>0, 2>2 no -> 1/3 */
    const float s1[6] = {1, 2, 3, 1, 2, 2}, s2[6] = {0, 3, 4, 0, 1, 2};
    double p1[2], p2[2], bf[2], mean[2];
    av_de_vanilla(s1, s2, 3, 2, p1, p2, bf);
    NEAR(p1[0], 2.0 / 3);
    NEAR(p2[0], 1.0 / 3);
    NEAR(p1[1], 1.0 / 3);
    NEAR(bf[0], log(2.0 / 3 + 1e-8) - log(1.0 / 3 + 1e-8));
    NEAR(bf[1], -bf[0]);
    av_de_col_means(s1, 3, 2, mean);
    NEAR(mean[0], 2.0);
    NEAR(mean[1], 5.0 / 3);
}

static void test_quantile_pseudocount(void) {
    const double a[4] = {1, 2, 3, 4};
    NEAR(av_de_quantile_sorted(a, 4, 0.9), 3.7);
    NEAR(av_de_quantile_sorted(a, 4, 0.5), 2.5);
    NEAR(av_de_quantile_sorted(a, 1, 0.9), 1.0);
    /* maxima of group 1 per gene: .5 .2 .3 .4; genes 0, 2, 3 non-expressed (< 0.01):
     * quantile 0.9 of {.3, .4, .5} = .48; group 2 expresses everything -> 1e-10;
     * pseudocount = .48 / G(4) */
    const float s1[8] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.1f, 0.2f, 0.2f};
    const float s2[8] = {0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f};
    const double m1[4] = {0, 1, 0, 0.005}, m2[4] = {1, 1, 1, 1};
    double pc = av_de_pseudocount(s1, 2, s2, 2, 4, m1, m2, 0.01, 0.9);
    CHECK(fabs(pc - 0.12) < 1e-7);
    /* nothing non-expressed on either side: max(1e-10, 1e-10 / G) = 1e-10 */
    NEAR(av_de_pseudocount(s1, 2, s2, 2, 4, m2, m2, 0.01, 0.9), 1e-10);
}

static void test_hpd(void) {
    const double a[5] = {0, 1, 2, 3, 10};
    double lo, hi;
    /* level .5: windows of floor(2.5) = 2 steps: widths 2, 2, 8 -> the first */
    CHECK(av_de_hpd_sorted(a, 5, 0.5, &lo, &hi) == 0);
    NEAR(lo, 0);
    NEAR(hi, 2);
    /* level .6: 3 steps: widths 3, 9 */
    CHECK(av_de_hpd_sorted(a, 5, 0.6, &lo, &hi) == 0);
    NEAR(lo, 0);
    NEAR(hi, 3);
    /* level .8: 4 steps, a single window */
    CHECK(av_de_hpd_sorted(a, 5, 0.8, &lo, &hi) == 0);
    NEAR(lo, 0);
    NEAR(hi, 10);
    const double b[5] = {-9, 1, 2, 3, 4};
    CHECK(av_de_hpd_sorted(b, 5, 0.6, &lo, &hi) == 0); /* 3 steps: 11, 3 */
    NEAR(lo, 1);
    NEAR(hi, 4);
    CHECK(av_de_hpd_sorted(a, 5, 1.0, &lo, &hi) != 0);
}

static void test_change(void) {
    /* lfc (pc ~ 0) = 2, 1, -2, 0; delta .5: up 2/4, down 1/4 */
    const float s1[4] = {4, 4, 1, 2}, s2[4] = {1, 2, 4, 2};
    double v[12], lo[1], hi[1];
    AvDeChange c = {v, v + 1, v + 2, v + 3, v + 4, v + 5, v + 6, v + 7, lo, hi};
    const double lvl = 0.5;
    av_de_change(s1, s2, 4, 1, 1e-300, 0.5, 0, 1, &lvl, &c);
    NEAR(v[0], 0.5);
    NEAR(v[1], 0.5);
    NEAR(v[2], 0.0);
    NEAR(v[3], 0.25);           /* mean */
    NEAR(v[4], 0.5);            /* median of -2 0 1 2 */
    NEAR(v[5], sqrt(8.75 / 4)); /* population std */
    NEAR(v[6], -2);
    NEAR(v[7], 2);
    NEAR(lo[0], 0); /* sorted -2 0 1 2, 2 steps: widths 3, 2 -> [0, 2] */
    NEAR(hi[0], 2);
    av_de_change(s1, s2, 4, 1, 1e-300, 0.5, 1, 0, NULL, &c); /* test_mode two */
    NEAR(v[0], 0.75);
    NEAR(v[2], log(0.75 + 1e-8) - log(0.25 + 1e-8));
    /* boundaries: lfc == delta counts as up, lfc == -delta is not down */
    const float t1[2] = {2, 1}, t2[2] = {1, 2};
    av_de_change(t1, t2, 2, 1, 1e-300, 1.0, 0, 0, NULL, &c);
    NEAR(v[0], 0.5);
    av_de_change(t1, t2, 2, 1, 1e-300, 1.0, 1, 0, NULL, &c);
    NEAR(v[0], 0.5);
    /* the reported LFC uses pseudocount * 1e-3: pc = 1 -> log2(1.001 / 0.001) for 1 vs 0 */
    const float u1[1] = {1}, u2[1] = {0};
    av_de_change(u1, u2, 1, 1, 1.0, 0.25, 0, 0, NULL, &c);
    NEAR(v[0], 1.0); /* log2(2) - log2(1) = 1 >= .25 */
    NEAR(v[3], log2(1.001) - log2(0.001));
}

static void test_order_fdr(void) {
    const double key[5] = {1, 3, 3, NAN, 2};
    int64_t o[5];
    av_de_order_desc(key, 5, o);
    CHECK(o[0] == 1 && o[1] == 2 && o[2] == 4 && o[3] == 0 && o[4] == 3);
    /* sorted .99 .97 .9 .5: running FDR .01, .02, .0467, .16 -> first three flagged */
    const double p[4] = {0.99, 0.5, 0.97, 0.9};
    uint8_t f[4];
    av_de_fdr_flags(p, 4, 0.05, f);
    CHECK(f[0] == 1 && f[1] == 0 && f[2] == 1 && f[3] == 1);
    av_de_fdr_flags(p, 4, 0.015, f);
    CHECK(f[0] == 1 && f[1] == 0 && f[2] == 0 && f[3] == 0);
    av_de_fdr_flags(p, 4, 0.001, f);
    CHECK(!f[0] && !f[1] && !f[2] && !f[3]);
}

static void test_format(void) {
    static const struct {
        double x;
        const char *s;
    } cases[] = {{0.006000000000000005, "0.006000000000000005"},
                 {1e-8, "1e-08"},
                 {100.0, "100.0"},
                 {0.25, "0.25"},
                 {1e16, "1e+16"},
                 {1234567890123456.0, "1234567890123456.0"},
                 {1.5e-5, "1.5e-05"},
                 {0.0001, "0.0001"},
                 {-2.5, "-2.5"},
                 {5.0, "5.0"},
                 {0.1, "0.1"},
                 {18.420680743952367, "18.420680743952367"},
                 {2.5e-300, "2.5e-300"},
                 {0.0, "0.0"}};
    char b[40];
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        av_de_format_double(cases[k].x, b);
        if (strcmp(b, cases[k].s)) {
            fprintf(stderr, "format %.17g: got '%s', want '%s'\n", cases[k].x, b, cases[k].s);
            failures++;
        }
    }
}

int main(void) {
    test_vanilla();
    test_quantile_pseudocount();
    test_hpd();
    test_change();
    test_order_fdr();
    test_format();
    if (failures) fprintf(stderr, "%d failures\n", failures);
    return failures ? 1 : 0;
}
