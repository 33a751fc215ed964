/* The sparse first layer (src/ops_sparse.c) against a naive double-precision reference:
 * y += v(counts) W and gw += v(counts)^T gy, v = log1p (mode 1) or the counts (mode 0),
 * for output widths around the kernels' tile sizes, empty rows, rows longer than the
 * value buffers, unsorted and repeated gene indices, rows at every offset from a 64-byte
 * boundary, on 1, 2 and 3 threads (whose results must be bitwise identical), with each
 * CPU path the machine has (src/isa.h; ATLASVI_ISA caps the first one).
 *
 * With AV_SPARSE_BENCH=1 (or a number of repetitions) in the environment it instead times
 * the two sparse layers of one scVI step with both encoders (128 simulated cells x 2000
 * genes, out = 128) on 1 and 2 threads, process CPU time and wall time, median over reps. */
#include <math.h>
#include <stdint.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "src/isa.h"
#include "src/ops_impl.h"
#include "src/simulate.h"
#include "src/util.h"

static int failures = 0;
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t next_u64(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double urand(double lo, double hi) {
    return lo + (hi - lo) * (double)(next_u64() >> 11) * (1.0 / 9007199254740992.0);
}

/* A random CSR batch of n cells over `in` genes; row r's length follows a pattern that
 * includes empty rows, full rows and rows over 256 non-zeros (when in allows). */
typedef struct {
    AvBatch b;
    int64_t *indptr, *cell;
    int32_t *indices;
    float *counts;
} Csr;

static Csr make_csr(int64_t n, int64_t in, int sorted) {
    Csr c;
    c.indptr = malloc(sizeof(int64_t) * (size_t)(n + 1));
    c.cell = malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    c.indices = malloc(sizeof(int32_t) * (size_t)(n * in + 1));
    c.counts = malloc(sizeof(float) * (size_t)(n * in + 1));
    int64_t nz = 0;
    for (int64_t i = 0; i < n; i++) {
        c.indptr[i] = nz;
        c.cell[i] = i;
        int64_t len;
        switch (i % 7) {
        case 0:
            len = 0;
            break;
        case 1:
            len = in;
            break;
        case 2:
            len = 1;
            break;
        case 3:
            len = in > 300 ? 300 : in / 2;
            break;
        default:
            len = (int64_t)(next_u64() % (uint64_t)(in + 1));
        }
        if (sorted) {
            /* a random subset, in gene order */
            int64_t need = len;
            for (int64_t j = 0; j < in && need > 0; j++)
                if ((int64_t)(next_u64() % (uint64_t)(in - j)) < need) {
                    c.indices[nz] = (int32_t)j;
                    c.counts[nz++] = (float)(1 + next_u64() % 40);
                    need--;
                }
        } else {
            /* any order, genes may repeat, some non-integer and zero values */
            for (int64_t k = 0; k < len; k++) {
                c.indices[nz] = (int32_t)(next_u64() % (uint64_t)in);
                c.counts[nz++] = k % 5 == 4 ? (float)urand(0, 3) : (float)(next_u64() % 1000);
            }
        }
    }
    c.indptr[n] = nz;
    AvBatch b = {(int)n, n, c.cell, c.indptr, c.indices, c.counts, 0, NULL, 0, NULL};
    c.b = b;
    return c;
}

static void free_csr(Csr *c) {
    free(c->indptr);
    free(c->cell);
    free(c->indices);
    free(c->counts);
}

/* n floats starting `shift` (0..15) floats past a 64-byte boundary, as the graph's
 * 16-byte aligned slabs place them; shift -1: plain malloc, nothing readable around them
 * (under AddressSanitizer, which then checks that the kernels touch nothing outside) */
static float *alloc_at(size_t n, int shift) {
    if (shift < 0) return malloc(sizeof(float) * (n ? n : 1));
    char *p = aligned_alloc(64, (sizeof(float) * (n + 16) + 63) / 64 * 64 + 64);
    return (float *)(p + 64) + shift;
}
static void free_at(float *f, int shift) {
    free(shift < 0 ? (void *)f : (void *)((char *)((uintptr_t)f & ~(uintptr_t)63) - 64));
}

static double value(int mode, float x) {
    return mode == 1 ? log1p((double)x) : (double)x;
}

/* |got - want| <= tol * scale, scale the sum of the absolute terms */
static int close_to(float got, double want, double scale) {
    return fabs((double)got - want) <= 2e-6 * scale + 1e-30;
}

/* W and gw start `shift` floats past a 64-byte boundary, y and dy (shift + 7) % 16 (-1:
 * all from malloc) */
static void check_case(int64_t n, int64_t in, int64_t out, int mode, int sorted, int shift) {
    Csr c = make_csr(n, in, sorted);
    const AvBatch *bt = &c.b;
    size_t ny = (size_t)(n * out), nw = (size_t)(in * out);
    int shift_y = shift < 0 ? -1 : (shift + 7) % 16;
    float *w = alloc_at(nw, shift), *y0 = malloc(sizeof(float) * (ny + 1));
    float *gy = alloc_at(ny + 1, shift_y), *gw0 = malloc(sizeof(float) * nw);
    for (size_t k = 0; k < nw; k++) w[k] = (float)urand(-1, 1), gw0[k] = (float)urand(-1, 1);
    for (size_t k = 0; k < ny; k++) y0[k] = (float)urand(-1, 1), gy[k] = (float)urand(-1, 1);

    /* the reference */
    double *yr = calloc(ny + 1, sizeof(double)), *ys = calloc(ny + 1, sizeof(double));
    double *gr = calloc(nw, sizeof(double)), *gs = calloc(nw, sizeof(double));
    for (size_t k = 0; k < ny; k++) yr[k] = y0[k], ys[k] = fabs(y0[k]);
    for (size_t k = 0; k < nw; k++) gr[k] = gw0[k], gs[k] = fabs(gw0[k]);
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = c.indptr[i]; k < c.indptr[i + 1]; k++) {
            double v = value(mode, c.counts[k]);
            int64_t gi = c.indices[k];
            for (int64_t o = 0; o < out; o++) {
                yr[i * out + o] += v * w[gi * out + o];
                ys[i * out + o] += fabs(v * w[gi * out + o]);
                gr[gi * out + o] += v * gy[i * out + o];
                gs[gi * out + o] += fabs(v * gy[i * out + o]);
            }
        }

    float *y[3], *gw[3];
    for (int t = 0; t < 3; t++) {
        omp_set_num_threads(t + 1);
        y[t] = alloc_at(ny + 1, shift_y);
        gw[t] = alloc_at(nw, shift);
        memcpy(y[t], y0, sizeof(float) * ny);
        memcpy(gw[t], gw0, sizeof(float) * nw);
        av_sparse_linear_forward(mode, bt, n, w, out, y[t]);
        av_sparse_linear_backward(mode, bt, n, gy, gw[t], out);
    }
    omp_set_num_threads(2);
    int bad_y = 0, bad_g = 0, diff_t = 0;
    for (size_t k = 0; k < ny; k++) bad_y += !close_to(y[0][k], yr[k], ys[k]);
    for (size_t k = 0; k < nw; k++) bad_g += !close_to(gw[0][k], gr[k], gs[k]);
    for (int t = 1; t < 3; t++) {
        diff_t += memcmp(y[t], y[0], sizeof(float) * ny) != 0;
        diff_t += memcmp(gw[t], gw[0], sizeof(float) * nw) != 0;
    }
    if (bad_y || bad_g || diff_t) {
        failures++;
        printf("FAIL n=%lld in=%lld out=%lld mode=%d sorted=%d shift=%d: %d bad y, %d bad gw, "
               "%d thread-count differences\n",
               (long long)n, (long long)in, (long long)out, mode, sorted, shift, bad_y, bad_g,
               diff_t);
    }
    for (int t = 0; t < 3; t++) free_at(y[t], shift_y), free_at(gw[t], shift);
    free_at(w, shift), free_at(gy, shift_y), free(y0), free(gw0), free(yr), free(ys), free(gr),
        free(gs);
    free_csr(&c);
}

/* ---- AV_SPARSE_BENCH: the sparse part of a default step ---- */

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int bench(int reps) {
    enum { B = 128, CHUNKS = 16, OUT = 128 };
    int64_t G = 2000, n_cells = (int64_t)B * CHUNKS;
    AvSimParams sp;
    av_sim_defaults(&sp);
    sp.n_cells = n_cells;
    sp.n_genes = G;
    sp.n_batches = 4;
    sp.n_types = 10;
    char err[512] = "";
    AvSim *sim = av_sim_create(&sp, err);
    AvCsr x;
    if (!sim || av_sim_cells(sim, 0, n_cells, &x, NULL, NULL, err)) {
        fprintf(stderr, "test_sparse_linear: %s\n", err);
        return 1;
    }
    AvBatch bt[CHUNKS];
    int64_t *ip = malloc(sizeof(int64_t) * CHUNKS * (B + 1));
    for (int c = 0; c < CHUNKS; c++) {
        int64_t a = x.indptr[(int64_t)c * B];
        for (int i = 0; i <= B; i++) ip[c * (B + 1) + i] = x.indptr[(int64_t)c * B + i] - a;
        AvBatch b = {B, B, NULL, ip + c * (B + 1), x.indices + a, x.data + a, 0, NULL, 0, NULL};
        bt[c] = b;
    }
    /* 16 bytes past a 64-byte boundary, as the graph's parameters and activations are */
    float *w[2], *gw[2], *y[2], *gy = alloc_at(B * OUT, 4);
    for (int l = 0; l < 2; l++) {
        w[l] = alloc_at((size_t)(G * OUT), 4);
        gw[l] = alloc_at((size_t)(G * OUT), 4);
        y[l] = alloc_at(B * OUT, 4);
        memset(gw[l], 0, sizeof(float) * (size_t)(G * OUT));
        memset(y[l], 0, sizeof(float) * B * OUT);
        for (int64_t k = 0; k < G * OUT; k++) w[l][k] = (float)urand(-0.05, 0.05);
    }
    for (int k = 0; k < B * OUT; k++) gy[k] = (float)urand(-1e-3, 1e-3);
    printf("sparse layers of one step: %d cells x %lld genes, %.1f non-zeros per cell, "
           "2 layers of out %d\n",
           B, (long long)G, (double)x.indptr[n_cells] / (double)n_cells, OUT);
    double *tf = malloc(sizeof(double) * 4 * (size_t)reps), *tb = tf + reps, *wf = tb + reps,
           *wb = wf + reps;
    for (int threads = 1; threads <= 2; threads++) {
        omp_set_num_threads(threads);
        for (int s = -20; s < reps; s++) {
            const AvBatch *b = &bt[(s + 20) % CHUNKS];
            double c0 = cpu_now(), w0 = av_now();
            for (int l = 0; l < 2; l++) av_sparse_linear_forward(1, b, B, w[l], OUT, y[l]);
            double c1 = cpu_now(), w1 = av_now();
            for (int l = 0; l < 2; l++) av_sparse_linear_backward(1, b, B, gy, gw[l], OUT);
            double c2 = cpu_now(), w2 = av_now();
            if (s < 0) continue;
            tf[s] = c1 - c0, tb[s] = c2 - c1, wf[s] = w1 - w0, wb[s] = w2 - w1;
        }
        printf("threads %d: forward %.3f ms cpu %.3f ms wall, backward %.3f ms cpu %.3f ms "
               "wall (per step, median of %d)\n",
               threads, 1e3 * median(tf, reps), 1e3 * median(wf, reps), 1e3 * median(tb, reps),
               1e3 * median(wb, reps), reps);
    }
    free(tf);
    return 0;
}

int main(void) {
    int reps = getenv("AV_SPARSE_BENCH") ? atoi(getenv("AV_SPARSE_BENCH")) : 0;
    if (reps > 0) return bench(reps > 1 ? reps : 300);
    /* every path the CPU has (src/isa.h), from the one ATLASVI_ISA says down to generic */
    static const int64_t outs[] = {1, 10, 16, 17, 64, 100, 128, 130, 256};
    AvIsa top = av_isa();
    for (int s = (int)top; s >= AV_ISA_GENERIC; s--) {
        av_isa_set((AvIsa)s);
        int before = failures;
        for (size_t q = 0; q < sizeof outs / sizeof *outs; q++)
            for (int mode = 0; mode <= 1; mode++)
                for (int sorted = 0; sorted <= 1; sorted++) {
                    check_case(23, 40, outs[q], mode, sorted, 4);
                    check_case(15, 333, outs[q], mode, sorted, (int)(q + 2 * mode + sorted) % 16);
                }
        /* every offset of the rows from a 64-byte boundary, for the 128-column tiles */
        for (int shift = 0; shift < 16; shift++) {
            check_case(9, 70, 128, 1, 1, shift);
            check_case(9, 70, 256, 0, 0, shift);
        }
        check_case(9, 70, 128, 1, 1, -1);
        check_case(9, 70, 256, 0, 0, -1);
        check_case(0, 50, 128, 1, 1, 4); /* no cells */
        check_case(3, 1, 17, 1, 0, 4);   /* one gene */
        printf("path %s: %d failed\n", av_isa_name((AvIsa)s), failures - before);
    }
    if (failures) {
        printf("test_sparse_linear: %d failures\n", failures);
        return 1;
    }
    printf("test_sparse_linear: all passed\n");
    return 0;
}
