/* The MPI layer under mpiexec -n 1, 2, 4 (and as a plain process): all-reduces, broadcasts,
 * gathers with uneven and empty shards, agreement. Built twice: against the real dist
 * library and against one compiled with a tiny DIST_PIECE, so that every buffer here is
 * sent in many pieces, as a buffer of more than 2^30 elements would be.
 * With AV_DIST_BIG=1 it also all-reduces, broadcasts and gathers real buffers of 2^31 + 5
 * elements (about 9 GiB a rank; AV_DIST_BIG=<count> picks another size). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"

static int failures = 0, rank = 0, size = 1;
#define CHECK(c, ...)                                                                              \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "rank %d: %s:%d: check failed: %s: ", rank, __FILE__, __LINE__, #c);   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

static uint64_t fnv(const void *p, size_t n) {
    const unsigned char *c = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 1099511628211ull;
    return h;
}

/* Every rank must hold the same bytes: compare hashes through min/max all-reduces. */
static int same_everywhere(const void *p, size_t n) {
    int64_t h[2];
    h[0] = h[1] = (int64_t)(fnv(p, n) >> 1);
    dist_allreduce_min_i64(h, 1);
    dist_allreduce_max_i64(h + 1, 1);
    return h[0] == h[1];
}

static void test_allreduce(void) {
    const int64_t n = 1003;
    float *f = malloc(sizeof *f * n);
    double *d = malloc(sizeof *d * n);
    int64_t *i64 = malloc(sizeof *i64 * n);
    for (int64_t i = 0; i < n; i++) {
        f[i] = (float)rank + 0.5f * (float)i;
        d[i] = 0.25 * rank + (double)i;
        i64[i] = ((int64_t)1 << 40) * rank + i; /* sums beyond 2^31 and 2^40 */
    }
    dist_allreduce_f32(f, n);
    dist_allreduce_f64(d, n);
    dist_allreduce_i64(i64, n);
    int64_t rsum = (int64_t)size * (size - 1) / 2;
    for (int64_t i = 0; i < n; i++) {
        float ef = (float)rsum + 0.5f * (float)i * (float)size;
        double ed = 0.25 * (double)rsum + (double)i * size;
        int64_t ei = ((int64_t)1 << 40) * rsum + i * size;
        CHECK(f[i] == ef, "f32[%" PRId64 "] = %g want %g", i, f[i], ef);
        CHECK(d[i] == ed, "f64[%" PRId64 "] = %g want %g", i, d[i], ed);
        CHECK(i64[i] == ei, "i64[%" PRId64 "] = %" PRId64 " want %" PRId64, i, i64[i], ei);
        if (f[i] != ef || d[i] != ed || i64[i] != ei) break;
    }
    /* Empty buffers are no-ops (NULL allowed). */
    dist_allreduce_f32(NULL, 0);
    dist_allreduce_f64(NULL, 0);
    dist_allreduce_i64(NULL, 0);

    /* min / max */
    for (int64_t i = 0; i < n; i++) i64[i] = (i % 2 ? -1 : 1) * (((int64_t)1 << 50) + rank * i);
    int64_t *mx = malloc(sizeof *mx * n);
    memcpy(mx, i64, sizeof *mx * n);
    dist_allreduce_min_i64(i64, n);
    dist_allreduce_max_i64(mx, n);
    for (int64_t i = 0; i < n; i++) {
        int64_t lo = (i % 2) ? -(((int64_t)1 << 50) + (size - 1) * i) : ((int64_t)1 << 50);
        int64_t hi = (i % 2) ? -((int64_t)1 << 50) : ((int64_t)1 << 50) + (size - 1) * i;
        CHECK(i64[i] == lo && mx[i] == hi, "min/max[%" PRId64 "] = %" PRId64 "/%" PRId64, i, i64[i],
              mx[i]);
        if (i64[i] != lo || mx[i] != hi) break;
    }
    d[0] = rank == size - 1 ? 1e300 : -rank;
    dist_allreduce_max_f64(d, 1);
    CHECK(d[0] == 1e300, "max f64 %g", d[0]);

    /* Replicas must stay identical: a float sum of arbitrary values must give the same bits
     * on every rank (the gradient all-reduce relies on it). */
    const int64_t m = 100003;
    float *g = malloc(sizeof *g * m);
    uint64_t s = 0x9E3779B97F4A7C15ull * (uint64_t)(rank + 1);
    for (int64_t i = 0; i < m; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        g[i] = (float)((double)(s >> 11) / 9007199254740992.0 - 0.5) * 1e3f;
    }
    dist_allreduce_f32(g, m);
    CHECK(same_everywhere(g, sizeof *g * m), "float all-reduce differs between ranks");
    free(g);
    free(mx);
    free(f);
    free(d);
    free(i64);
}

static void test_allgather_exscan(void) {
    int64_t *all = malloc(sizeof *all * size);
    dist_allgather_i64(((int64_t)1 << 35) + 3 * rank, all);
    for (int r = 0; r < size; r++)
        CHECK(all[r] == ((int64_t)1 << 35) + 3 * r, "allgather[%d] = %" PRId64, r, all[r]);
    free(all);
    int64_t before = dist_exscan_i64(((int64_t)1 << 33) + rank);
    int64_t want = ((int64_t)1 << 33) * rank + (int64_t)rank * (rank - 1) / 2;
    CHECK(before == want, "exscan = %" PRId64 " want %" PRId64, before, want);
}

static void test_bcast(void) {
    int root = size - 1;
    const int64_t n = 1001;
    unsigned char *b = malloc((size_t)n);
    for (int64_t i = 0; i < n; i++) b[i] = rank == root ? (unsigned char)(i * 7 + 1) : 0;
    dist_bcast(b, n, root);
    for (int64_t i = 0; i < n; i++) {
        CHECK(b[i] == (unsigned char)(i * 7 + 1), "bcast[%" PRId64 "] = %d", i, b[i]);
        if (b[i] != (unsigned char)(i * 7 + 1)) break;
    }
    dist_bcast(NULL, 0, root);
    free(b);

    /* Strings: empty ones, long ones, from a root that is not rank 0. */
    char *src[4] = {"obs_names", "", NULL, "batch"};
    char longs[3000];
    memset(longs, 'x', sizeof longs - 1);
    longs[sizeof longs - 1] = '\0';
    src[2] = longs;
    char **items = NULL;
    int64_t cnt = -1;
    if (rank == root) items = src, cnt = 4;
    dist_bcast_strings(&items, &cnt, root);
    CHECK(cnt == 4, "bcast_strings count %" PRId64, cnt);
    if (cnt == 4 && items) {
        CHECK(!strcmp(items[0], "obs_names"), "item 0 '%s'", items[0]);
        CHECK(!strcmp(items[1], ""), "item 1 '%s'", items[1]);
        CHECK(!strcmp(items[2], longs), "item 2 length %zu", strlen(items[2]));
        CHECK(!strcmp(items[3], "batch"), "item 3 '%s'", items[3]);
    }
    if (rank == root)
        CHECK(items == src, "root's array replaced");
    else {
        for (int64_t i = 0; i < cnt; i++) free(items[i]);
        free(items);
    }

    /* Zero strings. */
    items = NULL;
    cnt = rank == 0 ? 0 : 99;
    dist_bcast_strings(&items, &cnt, 0);
    CHECK(cnt == 0, "empty bcast_strings count %" PRId64, cnt);
    if (rank != 0 && size > 1) {
        CHECK(items != NULL, "non-root gets an array even for zero strings");
        free(items);
    }
}

/* Rows per rank: uneven, rank 1 holds none (when there is a rank 1). */
static int64_t rows_of(int r) {
    return r == 1 ? 0 : 3 * r + 2;
}

static void test_gather(int64_t cols) {
    int64_t mine = rows_of(rank), off = 0, total = 0;
    for (int r = 0; r < size; r++) total += rows_of(r);
    for (int r = 0; r < rank; r++) off += rows_of(r);
    CHECK(dist_exscan_i64(mine) == off, "exscan row offset");
    float *local = malloc(sizeof *local * (size_t)(mine * cols + 1));
    for (int64_t i = 0; i < mine; i++)
        for (int64_t c = 0; c < cols; c++) local[i * cols + c] = (float)((off + i) * 100 + c);
    float *out = NULL;
    if (rank == 0) {
        out = malloc(sizeof *out * (size_t)(total * cols + 1));
        for (int64_t k = 0; k < total * cols; k++) out[k] = -1;
    }
    dist_gather_rows_f32(local, mine, cols, out);
    if (rank == 0)
        for (int64_t i = 0; i < total; i++)
            for (int64_t c = 0; c < cols; c++)
                CHECK(out[i * cols + c] == (float)(i * 100 + c),
                      "gather[%" PRId64 ",%" PRId64 "] = %g", i, c, out[i * cols + c]);
    free(out);
    free(local);

    /* Every rank empty (and NULL buffers). */
    dist_gather_rows_f32(NULL, 0, cols, NULL);
}

/* Real large buffers (opt-in: AV_DIST_BIG=1 for 2^31 + 5 elements, or a count). Per rank
 * it needs 4 bytes per element for the all-reduce, then 1 byte for the broadcast, then on
 * rank 0 4 bytes and on the last rank 4 bytes for the gather. */
static void test_big(int64_t n) {
    if (rank == 0) printf("test_dist_mpi: big buffers of %" PRId64 " elements\n", n);
    float *f = malloc(sizeof *f * (size_t)n);
    int nomem = f == NULL;
    if (dist_any_failed(nomem, "no memory for the big test")) {
        failures++;
        free(f);
        return;
    }
    for (int64_t i = 0; i < n; i++) f[i] = (float)(i & 1023) + (float)rank;
    dist_allreduce_f32(f, n);
    float rs = (float)((int64_t)size * (size - 1) / 2);
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) bad += f[i] != (float)(i & 1023) * (float)size + rs;
    CHECK(bad == 0, "big all-reduce: %" PRId64 " wrong elements", bad);
    free(f);

    unsigned char *b = malloc((size_t)n);
    if (dist_any_failed(b == NULL, "no memory for the big broadcast")) {
        failures++;
        free(b);
        return;
    }
    for (int64_t i = 0; i < n; i++) b[i] = rank == 0 ? (unsigned char)(i % 251) : 0;
    dist_bcast(b, n, 0);
    bad = 0;
    for (int64_t i = 0; i < n; i++) bad += b[i] != (unsigned char)(i % 251);
    CHECK(bad == 0, "big bcast: %" PRId64 " wrong bytes", bad);
    free(b);

    /* Gather n rows of one column: rank 0 holds 3 rows, the last rank the rest. */
    int64_t mine = size == 1 ? n : rank == 0 ? 3 : rank == size - 1 ? n - 3 : 0;
    int64_t off = dist_exscan_i64(mine);
    float *loc = malloc(sizeof *loc * (size_t)(mine > 0 ? mine : 1));
    float *out = rank == 0 ? malloc(sizeof *out * (size_t)n) : NULL;
    if (dist_any_failed(!loc || (rank == 0 && !out), "no memory for the big gather")) {
        failures++;
        free(loc);
        free(out);
        return;
    }
    for (int64_t i = 0; i < mine; i++) loc[i] = (float)((off + i) & 0xFFFFF);
    dist_gather_rows_f32(loc, mine, 1, out);
    free(loc);
    if (rank == 0) {
        bad = 0;
        for (int64_t i = 0; i < n; i++) bad += out[i] != (float)(i & 0xFFFFF);
        CHECK(bad == 0, "big gather: %" PRId64 " wrong elements", bad);
        free(out);
    }
}

int main(int argc, char **argv) {
    dist_init(&argc, &argv);
    rank = dist_rank();
    size = dist_size();
    test_allreduce();
    test_allgather_exscan();
    test_bcast();
    test_gather(5);
    test_gather(1);
    test_gather(0);
    dist_barrier();
    const char *big = getenv("AV_DIST_BIG");
    if (big && *big) test_big(!strcmp(big, "1") ? ((int64_t)1 << 31) + 5 : strtoll(big, NULL, 10));
    char msg[128];
    snprintf(msg, sizeof msg, "test_dist_mpi: %d check(s) failed on rank %d", failures, rank);
    int bad = dist_any_failed(failures != 0, msg);
    if (!bad && rank == 0) printf("test_dist_mpi: ok on %d rank(s)\n", size);
    dist_finalize();
    return bad ? 1 : 0;
}
