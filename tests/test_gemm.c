/* av_sgemm (src/gemm.c) on every CPU path this machine runs (AVX-512, AVX2, generic C;
 * src/isa.h) against a double-precision reference: all four (ta, tb), beta 0
 * (C filled with NaN first: it must not be read), 1 and 0.5, odd sizes and depths, leading
 * dimensions wider than the rows (the padding holds NaN: it must not be read, and C's must
 * not be written), C at every offset from a cache line, 1 and 2 OpenMP threads, and calls from
 * inside a parallel region. The error of each element is measured against sum_p |a_ip b_pj| + |beta
 * c_ij| (the scale of its round-off) and must stay within a few float ulps times sqrt(k); on
 * every path the results of 1 and 2 threads, and of calls inside and outside a parallel
 * region, must be identical bit for bit, and the paths with FMA must agree bit for bit with
 * each other. Also reports cblas_sgemm's error on the same scale for comparison. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/gemm.h"
#include "src/isa.h"

static int failures = 0, checks = 0;
static int c_shift = 0;                  /* floats from a 64-byte boundary to C */
static double worst = 0, worst_blas = 0; /* max error / (eps * sqrt(k) * scale) */
static const double TOL = 4.0;           /* in units of eps * sqrt(k) */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

typedef struct {
    int ta, tb;
    int64_t m, n, k, lda, ldb, ldc;
    float *a, *b, *c0; /* inputs; c0 = C before the call */
    double *ref, *scale;
} Case;

/* Random A, B and C; padding past each row is NaN. */
static void make_case(Case *cs, int ta, int tb, int64_t m, int64_t n, int64_t k, int pad) {
    cs->ta = ta, cs->tb = tb, cs->m = m, cs->n = n, cs->k = k;
    int64_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
    cs->lda = ac + (pad ? 3 : 0), cs->ldb = bc + (pad ? 5 : 0), cs->ldc = n + (pad ? 2 : 0);
    cs->a = malloc(sizeof(float) * (size_t)(ar * cs->lda));
    cs->b = malloc(sizeof(float) * (size_t)(br * cs->ldb));
    cs->c0 = malloc(sizeof(float) * (size_t)(m * cs->ldc));
    for (int64_t i = 0; i < ar; i++)
        for (int64_t j = 0; j < cs->lda; j++) cs->a[i * cs->lda + j] = j < ac ? frand() : NAN;
    for (int64_t i = 0; i < br; i++)
        for (int64_t j = 0; j < cs->ldb; j++) cs->b[i * cs->ldb + j] = j < bc ? frand() : NAN;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < cs->ldc; j++) cs->c0[i * cs->ldc + j] = j < n ? frand() : -7.0f;
    cs->ref = malloc(sizeof(double) * (size_t)(m * n));
    cs->scale = malloc(sizeof(double) * (size_t)(m * n));
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0, sa = 0;
            for (int64_t p = 0; p < k; p++) {
                double x = ta ? cs->a[p * cs->lda + i] : cs->a[i * cs->lda + p];
                double y = tb ? cs->b[j * cs->ldb + p] : cs->b[p * cs->ldb + j];
                s += x * y, sa += fabs(x * y);
            }
            cs->ref[i * n + j] = s, cs->scale[i * n + j] = sa;
        }
}

static void free_case(Case *cs) {
    free(cs->a), free(cs->b), free(cs->c0), free(cs->ref), free(cs->scale);
}

/* Runs av_sgemm on a fresh C (NaN for beta = 0) and checks it; returns a copy of C (the
 * caller frees it). */
static float *run_check(const Case *cs, float beta, const char *how, int use_blas) {
    int64_t m = cs->m, n = cs->n, ldc = cs->ldc;
    /* C starts c_shift floats past a 64-byte line (the kernels align their panels to C) */
    float *mem = aligned_alloc(64, (sizeof(float) * (size_t)(m * ldc + c_shift) + 63) / 64 * 64);
    float *c = mem + c_shift;
    for (int64_t i = 0; i < m * ldc; i++) c[i] = beta == 0.0f && i % ldc < n ? NAN : cs->c0[i];
    if (use_blas)
        cblas_sgemm(CblasRowMajor, cs->ta ? CblasTrans : CblasNoTrans,
                    cs->tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)cs->k, 1.0f, cs->a,
                    (int)cs->lda, cs->b, (int)cs->ldb, beta, c, (int)ldc);
    else
        av_sgemm(cs->ta, cs->tb, m, n, cs->k, cs->a, cs->lda, cs->b, cs->ldb, beta, c, ldc);
    double unit = 0x1p-24 * sqrt((double)(cs->k > 0 ? cs->k : 1)), err_max = 0;
    int bad = 0;
    for (int64_t i = 0; i < m && bad < 3; i++) {
        for (int64_t j = 0; j < ldc && bad < 3; j++) {
            float got = c[i * ldc + j];
            if (j >= n) { /* padding of C: untouched */
                if (got != -7.0f) {
                    fprintf(stderr, "FAIL %s: C padding (%lld, %lld) written\n", how, (long long)i,
                            (long long)j);
                    bad++;
                }
                continue;
            }
            double c0 = cs->c0[i * ldc + j];
            double want = cs->ref[i * n + j] + (beta == 0.0f ? 0.0 : (double)beta * c0);
            double scale = cs->scale[i * n + j] + (beta == 0.0f ? 0.0 : fabs((double)beta * c0));
            double err = fabs((double)got - want) / ((scale > 0 ? scale : 1.0) * unit);
            if (!(err <= TOL)) { /* NaN fails too */
                fprintf(stderr,
                        "FAIL %s: C(%lld, %lld) = %.9g, want %.9g (error %.3g eps sqrt(k))\n", how,
                        (long long)i, (long long)j, got, want, err);
                bad++;
            }
            if (err > err_max) err_max = err;
        }
    }
    checks++;
    if (bad) failures++;
    if (use_blas) {
        if (err_max > worst_blas) worst_blas = err_max;
    } else if (err_max > worst) {
        worst = err_max;
    }
    memmove(mem, c, sizeof(float) * (size_t)(m * ldc));
    return mem;
}

/* av_sgemm_bias on 1 and 2 threads against C's rows filled with the bias and then av_sgemm
 * with beta = 1 on as many threads: bitwise equal (the same adds in the same order; with
 * the cblas fallback the same cblas calls), C's padding untouched. */
static void check_bias(const Case *cs) {
    int64_t m = cs->m, n = cs->n, ldc = cs->ldc;
    size_t bytes = (sizeof(float) * (size_t)(m * ldc + c_shift) + 63) / 64 * 64;
    float *bias = malloc(sizeof(float) * (size_t)n);
    for (int64_t j = 0; j < n; j++) bias[j] = frand();
    float *mw = aligned_alloc(64, bytes), *mg = aligned_alloc(64, bytes);
    float *want = mw + c_shift, *got = mg + c_shift;
    for (int nt = 1; nt <= 2; nt++) {
        omp_set_num_threads(nt);
        for (int64_t i = 0; i < m * ldc; i++) {
            want[i] = i % ldc < n ? bias[i % ldc] : -7.0f;
            got[i] = i % ldc < n ? NAN : -7.0f;
        }
        av_sgemm(cs->ta, cs->tb, m, n, cs->k, cs->a, cs->lda, cs->b, cs->ldb, 1.0f, want, ldc);
        av_sgemm_bias(cs->ta, cs->tb, m, n, cs->k, cs->a, cs->lda, cs->b, cs->ldb, bias, got, ldc);
        checks++;
        if (memcmp(got, want, sizeof(float) * (size_t)(m * ldc)) != 0) {
            fprintf(stderr, "FAIL bias: ta=%d tb=%d m=%lld n=%lld k=%lld threads=%d\n", cs->ta,
                    cs->tb, (long long)m, (long long)n, (long long)cs->k, nt);
            failures++;
        }
    }
    free(mw), free(mg), free(bias);
}

/* One case: every beta, 1 and 2 threads, bitwise equal across thread counts. */
static void check_case(int ta, int tb, int64_t m, int64_t n, int64_t k, int pad) {
    Case cs;
    make_case(&cs, ta, tb, m, n, k, pad);
    const float betas[3] = {0.0f, 1.0f, 0.5f};
    for (int ib = 0; ib < 3; ib++) {
        char how[160];
        float *c1 = NULL;
        for (int nt = 1; nt <= 2; nt++) {
            omp_set_num_threads(nt);
            snprintf(how, sizeof how, "ta=%d tb=%d m=%lld n=%lld k=%lld pad=%d beta=%g threads=%d",
                     ta, tb, (long long)m, (long long)n, (long long)k, pad, betas[ib], nt);
            float *c = run_check(&cs, betas[ib], how, 0);
            if (nt == 1) {
                c1 = c;
                continue;
            }
            if (memcmp(c1, c, sizeof(float) * (size_t)(m * cs.ldc)) != 0) {
                fprintf(stderr, "FAIL %s: differs from 1 thread\n", how);
                failures++;
            }
            free(c);
        }
        free(c1);
        if (ib < 2) free(run_check(&cs, betas[ib], "cblas", 1));
    }
    check_bias(&cs);
    free_case(&cs);
}

/* The generic kernel's `acc += a * b` is one FMA where the baseline target has a fast fmaf
 * (ARM); on x86-64 the baseline has no FMA and its last bits differ. */
#ifdef __FP_FAST_FMAF
#define GENERIC_FMA 1
#else
#define GENERIC_FMA 0
#endif

/* C on every path this CPU runs, compared bit for bit between the FMA paths (and within a
 * tolerance for the others: run_check). */
static void check_paths_agree(int ta, int tb, int64_t m, int64_t n, int64_t k, int pad) {
    Case cs;
    make_case(&cs, ta, tb, m, n, k, pad);
    AvIsa keep = av_isa();
    float *ref = NULL;
    AvIsa ref_isa = AV_ISA_GENERIC;
    for (int p = (int)av_isa_best(); p >= AV_ISA_GENERIC; p--) {
        av_isa_set((AvIsa)p);
        if (p == AV_ISA_GENERIC && !GENERIC_FMA) break;
        omp_set_num_threads(2);
        char how[160];
        snprintf(how, sizeof how, "path %s ta=%d tb=%d m=%lld n=%lld k=%lld", av_isa_name(p), ta,
                 tb, (long long)m, (long long)n, (long long)k);
        float *c = run_check(&cs, 0.5f, how, 0);
        if (!ref) {
            ref = c, ref_isa = (AvIsa)p;
            continue;
        }
        checks++;
        if (memcmp(ref, c, sizeof(float) * (size_t)(m * cs.ldc)) != 0) {
            fprintf(stderr, "FAIL %s: differs from path %s\n", how, av_isa_name(ref_isa));
            failures++;
        }
        free(c);
    }
    free(ref);
    av_isa_set(keep);
    free_case(&cs);
}

/* Two threads of a parallel region each call av_sgemm on their own C: serial inside,
 * correct, and equal to the call from outside. */
static void check_inside_parallel(int ta, int tb, int64_t m, int64_t n, int64_t k) {
    Case cs[2];
    for (int t = 0; t < 2; t++) make_case(&cs[t], ta, tb, m, n, k, t);
    float *out[2] = {NULL, NULL};
    omp_set_num_threads(2);
    int team = 0, nested_ok = 1;
#pragma omp parallel num_threads(2)
    {
        int t = omp_get_thread_num();
#pragma omp single
        team = omp_get_num_threads();
        if (!omp_in_parallel()) nested_ok = 0;
        char how[160];
        snprintf(how, sizeof how, "inside parallel: thread %d ta=%d tb=%d m=%lld n=%lld k=%lld", t,
                 ta, tb, (long long)m, (long long)n, (long long)k);
        out[t] = run_check(&cs[t], 1.0f, how, 0);
    }
    if (team != 2 || !nested_ok) printf("note: the parallel region had %d threads\n", team);
    for (int t = 0; t < 2; t++) {
        float *c = run_check(&cs[t], 1.0f, "outside parallel", 0);
        if (memcmp(c, out[t], sizeof(float) * (size_t)(m * cs[t].ldc)) != 0) {
            fprintf(stderr, "FAIL ta=%d tb=%d m=%lld n=%lld k=%lld: inside != outside\n", ta, tb,
                    (long long)m, (long long)n, (long long)k);
            failures++;
        }
        free(c), free(out[t]), free_case(&cs[t]);
    }
}

/* Every check on the path av_isa() says. */
static void check_path(void) {
    static const int64_t sizes[] = {1, 7, 15, 17, 31, 33, 127, 129};
    static const int64_t depths[] = {1,  2,   3,   8,   15,  16,  17,  31,  32,  33,
                                     64, 100, 127, 128, 129, 255, 256, 257, 300, 513};
    const int ns = (int)(sizeof sizes / sizeof sizes[0]),
              nd = (int)(sizeof depths / sizeof depths[0]);
    int idx = 0;
    /* every pair of odd sizes in every (ta, tb), a different depth each time */
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int i = 0; i < ns; i++)
                for (int j = 0; j < ns; j++, idx++)
                    check_case(ta, tb, sizes[i], sizes[j], depths[(idx * 7) % nd], idx % 3 == 0);
    /* the model's shapes and their neighbours */
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            check_case(ta, tb, 128, 2000, 128, 0);
            check_case(ta, tb, 128, 128, 2000, 1);
            check_case(ta, tb, 129, 2000, 127, 1);
            check_case(ta, tb, 127, 129, 2001, 0);
            check_case(ta, tb, 2000, 33, 17, 1);
            check_case(ta, tb, 300, 20, 600, 0);  /* more than one row block of 256 */
            check_case(ta, tb, 300, 260, 70, 1);  /* the same with A packed (>= 8 panels) */
            check_case(ta, tb, 33, 300, 2001, 0); /* A packed, several blocks of k */
            check_case(ta, tb, 128, 10, 128, 0);
            check_case(ta, tb, 128, 128, 14, 0);
            check_case(ta, tb, 14, 128, 128, 1);
        }
    /* C at every alignment to a cache line, rows a multiple of 16 floats wide */
    for (c_shift = 1; c_shift < 16; c_shift += c_shift < 4 ? 1 : 5) {
        check_case(c_shift % 2, c_shift / 2 % 2, 40, 400, 33, 0);
        check_case(0, 0, 24, 2000, 20, 0);
        check_case(1, 1, 17, 64, 9, 0);
    }
    c_shift = 0;
    /* every depth from 1 to 2001 on a small odd shape */
    for (int64_t k = 1; k <= 2001; k += k < 300 ? 1 : 37)
        check_case((int)(k % 2), (int)(k / 2 % 2), 9, 33, k, (int)(k % 3 == 0));
    /* k = 0: C = beta C, or the bias rows */
    {
        float c[4] = {NAN, NAN, NAN, -7.0f}, z = 0, bias[3] = {1, 2, 3};
        av_sgemm_bias(0, 0, 1, 3, 0, &z, 1, &z, 3, bias, c, 3);
        checks++;
        if (c[0] != 1 || c[1] != 2 || c[2] != 3 || c[3] != -7.0f) {
            fprintf(stderr, "FAIL k = 0 with a bias\n");
            failures++;
        }
    }
    {
        float c[6] = {NAN, NAN, NAN, 1, 2, 3}, z = 0;
        av_sgemm(0, 0, 1, 3, 0, &z, 1, &z, 3, 0.0f, c, 3);
        av_sgemm(0, 0, 1, 3, 0, &z, 1, &z, 3, 2.0f, c + 3, 3);
        checks++;
        if (c[0] != 0 || c[1] != 0 || c[2] != 0 || c[3] != 2 || c[4] != 4 || c[5] != 6) {
            fprintf(stderr, "FAIL k = 0\n");
            failures++;
        }
    }
    check_inside_parallel(0, 0, 128, 2000, 128);
    check_inside_parallel(1, 0, 128, 300, 128);
    check_inside_parallel(0, 1, 128, 128, 700);
    check_inside_parallel(1, 1, 33, 17, 65);
}

/* ATLASVI_ISA=avx2 or generic runs only that path (and the ones below it); unset, every
 * path this CPU has. */
int main(void) {
    AvIsa top = av_isa();
    for (int p = (int)top; p >= AV_ISA_GENERIC; p--) {
        av_isa_set((AvIsa)p);
        int before = failures;
        worst = 0;
        check_path();
        printf("path %s: %d failed; max error %.3f eps sqrt(k) (tolerance %.1f)\n", av_isa_name(p),
               failures - before, worst, TOL);
    }
    av_isa_set(top);
    /* the model's shapes, edges and every alignment of C on every path */
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            check_paths_agree(ta, tb, 128, 2000, 128, 0);
            check_paths_agree(ta, tb, 128, 128, 2000, 1);
            check_paths_agree(ta, tb, 127, 129, 513, 0);
            check_paths_agree(ta, tb, 300, 260, 70, 1);
            check_paths_agree(ta, tb, 9, 33, 17, 1);
        }
    printf("%d checks, %d failed (cblas_sgemm's max error on the same scale: %.3f)\n", checks,
           failures, worst_blas);
    return failures ? 1 : 0;
}
