/* av_sgemm (src/gemm.c) against OpenBLAS's cblas_sgemm on the GEMM shapes of the scVI
 * step (batch 128, hidden 128, genes 2000), GFLOP/s side by side; each rate is the best of
 * 10 x --reps timed samples (a sample: one call, or --calls calls; by default as many as
 * make ~20 us), the implementations interleaved:
 *   blas1 : cblas_sgemm, OpenBLAS on one thread (openblas_set_num_threads(1))
 *   av1   : av_sgemm with 1 OpenMP thread
 *   blasT : cblas_sgemm on one thread per OpenMP thread, the rows or columns of C split the
 *           way src/ops_linear.c's sgemm() split them before av_sgemm (T = --threads)
 *   avT   : av_sgemm with T OpenMP threads
 *
 * Build (against a CMake build directory's static libraries, after cmake --build):
 *   B=build; cc -O3 -march=x86-64-v2 -fopenmp -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror \
 *     -I. -I$(sed -n 's/^OPENBLAS_INCLUDE:PATH=//p' $B/CMakeCache.txt) \
 *     benchmarks/gemm_bench.c -o $B/gemm_bench $B/libav_core.a $B/libav_base.a -lopenblas -lm
 *   $B/gemm_bench [--cpu] [--threads 2] [--reps 30] [--calls C] [--beta 1] [--shift 0]
 *                 [--m M --n N --k K --ta A --tb B]
 * Run it without nice on an otherwise idle machine and repeat it: the rates are noisy. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "src/gemm.h"
#include "src/isa.h"

void openblas_set_num_threads(int);

/* wall seconds, or with --cpu the calling thread's CPU seconds for the 1-thread columns
 * (steadier on a shared machine: time descheduled does not count) */
static int use_cpu;
static double now_clock(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static double now(int impl) {
    return now_clock(use_cpu && (impl == 0 || impl == 1) ? CLOCK_THREAD_CPUTIME_ID
                                                         : CLOCK_MONOTONIC);
}

/* src/ops_linear.c's sgemm() before av_sgemm: OpenBLAS per thread on a split of C */
static void blas_split(int ta, int tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                       const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    if (m == 0 || n == 0 || k == 0) return;
    int split_rows = m >= n;
#pragma omp parallel
    {
        int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
        int64_t len = split_rows ? m : n, lo = len * t / nt, hi = len * (t + 1) / nt;
        if (hi > lo) {
            const float *ap = a, *bp = b;
            float *cp = c;
            int64_t mm = m, nn = n;
            if (split_rows) {
                ap += ta ? lo : lo * lda;
                cp += lo * ldc;
                mm = hi - lo;
            } else {
                bp += tb ? lo * ldb : lo;
                cp += lo;
                nn = hi - lo;
            }
            cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                        tb ? CblasTrans : CblasNoTrans, (int)mm, (int)nn, (int)k, 1.0f, ap,
                        (int)lda, bp, (int)ldb, beta, cp, (int)ldc);
        }
    }
}

typedef struct {
    int ta, tb;
    int64_t m, n, k;
    const char *what;
} Shape;

enum { BLAS1, AV1, BLAST, AVT, NIMPL };

static float g_beta = 1.0f; /* --beta */
static int g_shift = 0;     /* --shift: C starts this many floats past a 64-byte line */
static void call(int impl, const Shape *s, const float *a, const float *b, float *c, int threads) {
    int64_t lda = s->ta ? s->m : s->k, ldb = s->tb ? s->k : s->n, ldc = s->n;
    switch (impl) {
    case BLAS1:
        cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans,
                    s->tb ? CblasTrans : CblasNoTrans, (int)s->m, (int)s->n, (int)s->k, 1.0f, a,
                    (int)lda, b, (int)ldb, g_beta, c, (int)ldc);
        break;
    case AV1:
        omp_set_num_threads(1);
        av_sgemm(s->ta, s->tb, s->m, s->n, s->k, a, lda, b, ldb, g_beta, c, ldc);
        break;
    case BLAST:
        omp_set_num_threads(threads);
        blas_split(s->ta, s->tb, s->m, s->n, s->k, a, lda, b, ldb, g_beta, c, ldc);
        break;
    default:
        omp_set_num_threads(threads);
        av_sgemm(s->ta, s->tb, s->m, s->n, s->k, a, lda, b, ldb, g_beta, c, ldc);
    }
}

int main(int argc, char **argv) {
    int threads = 2, reps = 30, calls = 0;
    Shape custom = {0, 0, 0, 0, 0, "custom"};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "--cpu")) {
            use_cpu = 1;
            continue;
        }
        if (!v || (strcmp(o, "--threads") && strcmp(o, "--reps") && strcmp(o, "--calls") &&
                   strcmp(o, "--m") && strcmp(o, "--n") && strcmp(o, "--k") && strcmp(o, "--ta") &&
                   strcmp(o, "--tb") && strcmp(o, "--beta") && strcmp(o, "--shift"))) {
            fprintf(stderr, "usage: gemm_bench [--cpu] [--threads T] [--reps R] [--calls C] "
                            "[--beta 1] [--shift 0] [--m M --n N --k K --ta 0|1 --tb 0|1]\n");
            return 2;
        }
        i++;
        if (!strcmp(o, "--threads"))
            threads = atoi(v);
        else if (!strcmp(o, "--reps"))
            reps = atoi(v);
        else if (!strcmp(o, "--calls"))
            calls = atoi(v);
        else if (!strcmp(o, "--m"))
            custom.m = atoll(v);
        else if (!strcmp(o, "--n"))
            custom.n = atoll(v);
        else if (!strcmp(o, "--k"))
            custom.k = atoll(v);
        else if (!strcmp(o, "--ta"))
            custom.ta = atoi(v);
        else if (!strcmp(o, "--beta"))
            g_beta = (float)atof(v);
        else
            custom.tb = atoi(v);
    }
    Shape shapes[] = {
        {0, 0, 128, 2000, 128, "forward  y = x W"}, {1, 0, 128, 2000, 128, "dW = x^T dy"},
        {0, 1, 128, 128, 2000, "dX = dy W^T"},      {0, 0, 128, 128, 128, "hidden forward"},
        {1, 0, 128, 128, 128, "hidden dW"},         {0, 1, 128, 128, 128, "hidden dX"},
        {0, 0, 128, 10, 128, "latent forward"},     {0, 1, 128, 128, 10, "latent dX"},
        {0, 0, 128, 128, 14, "decoder in forward"}, {1, 0, 14, 128, 128, "decoder in dW"},
        {0, 0, 1024, 1024, 1024, "square 1024"},
    };
    int nshape = (int)(sizeof shapes / sizeof shapes[0]);
    Shape *list = shapes;
    if (custom.m > 0 && custom.n > 0 && custom.k > 0) list = &custom, nshape = 1;

    openblas_set_num_threads(1);
    printf("av_sgemm path %s (ATLASVI_ISA); OpenBLAS on 1 thread per caller; best of %d samples; "
           "beta %g; C %d floats "
           "past a line; GFLOP/s\n",
           av_isa_name(av_isa()), 10 * reps, g_beta, g_shift);
    printf("%-20s %2s %2s %5s %5s %5s | %7s %7s %6s | %7s %7s %6s\n", "shape", "ta", "tb", "m", "n",
           "k", "blas1", "av1", "av/bl", "blasT", "avT", "av/bl");
    for (int s = 0; s < nshape; s++) {
        const Shape *sh = &list[s];
        size_t na = (size_t)(sh->m * sh->k), nb = (size_t)(sh->k * sh->n),
               nc = (size_t)(sh->m * sh->n);
        /* 64-byte aligned, as the graph's arena allocates activations */
        float *a = aligned_alloc(64, (na * sizeof(float) + 63) / 64 * 64),
              *b = aligned_alloc(64, (nb * sizeof(float) + 63) / 64 * 64),
              *cmem = aligned_alloc(64, ((nc + 16) * sizeof(float) + 63) / 64 * 64),
              *c = cmem + g_shift;
        srand(1);
        for (size_t i = 0; i < na; i++) a[i] = (float)rand() / RAND_MAX - 0.5f;
        for (size_t i = 0; i < nb; i++) b[i] = (float)rand() / RAND_MAX - 0.5f;
        memset(c, 0, nc * sizeof(float));
        double flop = 2.0 * (double)sh->m * (double)sh->n * (double)sh->k;
        /* a sample is one call, or a few where one is shorter than ~20 us; the best sample
         * is the one least disturbed by other load (the machine is shared) */
        int batch = calls > 0 ? calls : (int)(20e-6 / (flop / 80e9)) + 1;
        double best[NIMPL];
        for (int impl = 0; impl < NIMPL; impl++) best[impl] = 1e30;
        for (int r = 0; r < reps; r++) {
            for (int impl = 0; impl < NIMPL; impl++) { /* interleaved: the same noise for all */
                call(impl, sh, a, b, c, threads);      /* warm */
                for (int smp = 0; smp < 10; smp++) {
                    double t0 = now(impl);
                    for (int i = 0; i < batch; i++) call(impl, sh, a, b, c, threads);
                    double dt = (now(impl) - t0) / batch;
                    if (dt < best[impl]) best[impl] = dt;
                }
            }
        }
        double g[NIMPL];
        for (int impl = 0; impl < NIMPL; impl++) g[impl] = flop / best[impl] * 1e-9;
        printf("%-20s %2d %2d %5lld %5lld %5lld | %7.1f %7.1f %5.2fx | %7.1f %7.1f %5.2fx\n",
               sh->what, sh->ta, sh->tb, (long long)sh->m, (long long)sh->n, (long long)sh->k,
               g[BLAS1], g[AV1], g[AV1] / g[BLAS1], g[BLAST], g[AVT], g[AVT] / g[BLAST]);
        fflush(stdout);
        free(a), free(b), free(cmem);
    }
    printf("(blasT/avT: %d OpenMP threads)\n", threads);
    return 0;
}
