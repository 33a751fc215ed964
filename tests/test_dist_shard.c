/* dist_plan_shards: pure shard arithmetic, no MPI. Offsets beyond 2^31 and 2^40, balance
 * by non-zeros, empty rows, more parts than rows, monotone bounds. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "dist/dist.h"

static int failures = 0;
#define CHECK(c, ...)                                                                              \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #c);                  \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

/* Checks the invariants every plan must satisfy and returns the largest part weight
 * (non-zeros + rows) minus the ideal share, in units of the heaviest row's weight. */
static double check_plan(const char *name, const int64_t *indptr, int64_t n_rows, int parts) {
    int64_t *b = malloc(sizeof *b * (size_t)(parts + 1));
    for (int r = 0; r <= parts; r++) b[r] = -12345;
    dist_plan_shards(indptr, n_rows, parts, b);
    CHECK(b[0] == 0, "%s: bounds[0] = %" PRId64, name, b[0]);
    CHECK(b[parts] == n_rows, "%s: bounds[P] = %" PRId64 " want %" PRId64, name, b[parts], n_rows);
    int64_t heaviest = 1;
    for (int64_t i = 0; i < n_rows; i++) {
        int64_t w = indptr[i + 1] - indptr[i] + 1;
        if (w > heaviest) heaviest = w;
    }
    double total = (double)(indptr[n_rows] - indptr[0] + n_rows), worst = 0;
    for (int r = 0; r < parts; r++) {
        CHECK(b[r] <= b[r + 1], "%s: bounds not monotone at %d: %" PRId64 " > %" PRId64, name, r,
              b[r], b[r + 1]);
        CHECK(b[r] >= 0 && b[r] <= n_rows, "%s: bound %d out of range", name, r);
        if (b[r] > b[r + 1] || b[r] < 0 || b[r + 1] > n_rows) continue;
        double w = (double)(indptr[b[r + 1]] - indptr[b[r]] + (b[r + 1] - b[r]));
        double dev = (w - total / parts) / (double)heaviest;
        if (dev < 0) dev = -dev;
        if (dev > worst) worst = dev;
    }
    free(b);
    return worst;
}

int main(void) {
    /* Uniform rows of 10 non-zeros, offsets starting beyond 2^31 and 2^40 (the plan must
     * not depend on where the offsets start). */
    const int64_t bases[] = {0, ((int64_t)1 << 31) + 7, ((int64_t)1 << 40) + 3};
    for (int k = 0; k < 3; k++) {
        int64_t n = 1000, ip[1001];
        for (int64_t i = 0; i <= n; i++) ip[i] = bases[k] + 10 * i;
        int64_t b[5];
        dist_plan_shards(ip, n, 4, b);
        CHECK(b[0] == 0 && b[1] == 250 && b[2] == 500 && b[3] == 750 && b[4] == 1000,
              "uniform base %d: %" PRId64 " %" PRId64 " %" PRId64, k, b[1], b[2], b[3]);
    }

    /* Huge non-zero counts: 8 rows of 2^40 non-zeros each (total 2^43 > 2^31, 2^40), and
     * rows of 2^61 (total near 2^63 - 2^61: r * total would overflow). */
    {
        int64_t ip[9];
        for (int i = 0; i <= 8; i++) ip[i] = (int64_t)i << 40;
        int64_t b[5];
        dist_plan_shards(ip, 8, 4, b);
        CHECK(b[1] == 2 && b[2] == 4 && b[3] == 6 && b[4] == 8,
              "2^40 rows: %" PRId64 " %" PRId64 " %" PRId64, b[1], b[2], b[3]);
        for (int i = 0; i <= 3; i++) ip[i] = (int64_t)i << 61;
        int64_t c[4];
        dist_plan_shards(ip, 3, 3, c);
        CHECK(c[0] == 0 && c[1] == 1 && c[2] == 2 && c[3] == 3, "2^61 rows: %" PRId64 " %" PRId64,
              c[1], c[2]);
    }

    /* Balanced by non-zeros, not rows: first half of the rows are 100x heavier. */
    {
        enum { N = 1000 };
        static int64_t ip[N + 1];
        ip[0] = ((int64_t)1 << 33);
        for (int i = 0; i < N; i++) ip[i + 1] = ip[i] + (i < N / 2 ? 1000 : 10);
        int64_t b[3];
        dist_plan_shards(ip, N, 2, b);
        int64_t left = ip[b[1]] - ip[0], right = ip[N] - ip[b[1]];
        CHECK(b[1] < N / 2, "heavy half should be split: b1 = %" PRId64, b[1]);
        CHECK(llabs(left - right) <= 2000, "nnz imbalance %" PRId64 " vs %" PRId64, left, right);
        double dev = check_plan("skewed", ip, N, 2);
        CHECK(dev <= 1.0, "skewed: deviation %.2f rows", dev);
    }

    /* Random row sizes including many empty rows, many part counts, offsets above 2^40. */
    {
        enum { N = 5000 };
        static int64_t ip[N + 1];
        uint64_t s = 88172645463325252ull;
        ip[0] = ((int64_t)1 << 40) + 11;
        for (int i = 0; i < N; i++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            int64_t len = (s % 3 == 0) ? 0 : (int64_t)(s >> 20) % 3000;
            ip[i + 1] = ip[i] + len;
        }
        const int parts[] = {1, 2, 3, 7, 16, 64, 1000, 4999, 5000, 5001, 20000};
        for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) {
            char name[64];
            snprintf(name, sizeof name, "random P=%d", parts[k]);
            double dev = check_plan(name, ip, N, parts[k]);
            /* Nearest-boundary rounding: each part is within one heaviest row of its share. */
            CHECK(dev <= 1.0, "%s: deviation %.2f heaviest rows", name, dev);
        }
    }

    /* Empty rows only (nnz = 0): split evenly by rows. */
    {
        int64_t ip[101];
        for (int i = 0; i <= 100; i++) ip[i] = 5;
        int64_t b[5];
        dist_plan_shards(ip, 100, 4, b);
        CHECK(b[1] == 25 && b[2] == 50 && b[3] == 75, "all-empty: %" PRId64 " %" PRId64 " %" PRId64,
              b[1], b[2], b[3]);
    }

    /* More parts than rows: parts with zero rows, each row in exactly one part. */
    {
        int64_t ip[4] = {0, 3, 3, 9}, b[9];
        dist_plan_shards(ip, 3, 8, b);
        int nonempty = 0;
        for (int r = 0; r < 8; r++) {
            CHECK(b[r] <= b[r + 1], "parts>rows not monotone at %d", r);
            CHECK(b[r + 1] - b[r] <= 1, "parts>rows: part %d holds %" PRId64 " rows", r,
                  b[r + 1] - b[r]);
            nonempty += b[r + 1] > b[r];
        }
        CHECK(b[0] == 0 && b[8] == 3 && nonempty == 3,
              "parts>rows: ends %" PRId64 " %" PRId64 ", %d non-empty parts", b[0], b[8], nonempty);
    }

    /* Zero rows, one part, one row. */
    {
        int64_t ip[2] = {42, 42}, b[4] = {-1, -1, -1, -1};
        dist_plan_shards(ip, 0, 3, b);
        CHECK(b[0] == 0 && b[1] == 0 && b[2] == 0 && b[3] == 0, "zero rows");
        dist_plan_shards(ip, 1, 1, b);
        CHECK(b[0] == 0 && b[1] == 1, "one row one part");
        int64_t one[2] = {0, 1000000};
        dist_plan_shards(one, 1, 3, b);
        CHECK(b[0] == 0 && b[3] == 1 && b[1] <= b[2], "one row three parts");
    }

    /* A corrupt indptr (INT64_MAX, then decreasing; the readers reject it later): the plan
     * stays monotone and in range, without overflow (UBSan in the sanitizer build). */
    {
        int64_t ip[6] = {0, 5, INT64_MAX, INT64_MAX, INT64_MAX, 7}, b[4];
        for (int n = 2; n <= 5; n++) {
            dist_plan_shards(ip, n, 3, b);
            CHECK(b[0] == 0 && b[0] <= b[1] && b[1] <= b[2] && b[2] <= b[3] && b[3] == n,
                  "INT64_MAX indptr, %d rows: %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64, n,
                  b[0], b[1], b[2], b[3]);
        }
    }

    if (failures)
        fprintf(stderr, "test_dist_shard: %d failure(s)\n", failures);
    else
        printf("test_dist_shard: ok\n");
    return failures ? 1 : 0;
}
