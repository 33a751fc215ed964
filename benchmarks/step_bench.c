/* One scVI training step, timed by phase and by op: data (gathering a minibatch), forward,
 * backward (gradient zeroing included), optimiser; no file I/O, one process (the
 * all-reduce is absent: see docs/benchmarks.md). Also a single-call sgemm rate at the
 * model's shape, the machine's square sgemm rate (1024^3, OpenBLAS threads = --threads)
 * and the GEMM FLOPs of the model, for the roofline-style floor against each rate.
 *
 *   step_bench [--threads T] [--batch 128] [--genes 2000] [--reps 200] [--json]
 *
 * Cells come from the simulator (src/simulate.h) in memory. Built by
 * benchmarks/build_step_bench.sh against a build directory's static libraries. */
#include <cblas.h>
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "models/scvi.h"
#include "src/adam.h"
#include "src/gemm.h"
#include "src/ops_impl.h"
#include "src/simulate.h"
#include "src/util.h"

static const char *op_name(AvOpKind k) {
    static const char *names[] = {
        "linear",       "batchnorm",     "layernorm",  "relu",      "dropout",
        "exp_eps",      "reparam",       "softmax",    "kl_normal", "count_nll (ZINB)",
        "loss",         "input log_lib", "input cont", "xent",      "kl_categorical",
        "normal_logpdf"};
    return k < AV_OP_N ? names[k] : "?";
}

/* wall seconds, or with --cpu the process CPU seconds (steadier on a loaded machine; with
 * one thread it is that thread's time) */
static int use_cpu;
static double now(void) {
    if (!use_cpu) return av_now();
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

typedef struct {
    AvBatch b;
    int64_t *indptr, *cell;
    int32_t *indices, *cat;
    float *counts;
} Mini;

static void fill(Mini *mb, const AvCsr *x, const int32_t *batch, int64_t r0, int n) {
    int64_t nz = 0;
    for (int i = 0; i < n; i++) {
        int64_t r = r0 + i, a = x->indptr[r], e = x->indptr[r + 1];
        mb->indptr[i] = nz;
        memcpy(mb->indices + nz, x->indices + a, sizeof(int32_t) * (size_t)(e - a));
        memcpy(mb->counts + nz, x->data + a, sizeof(float) * (size_t)(e - a));
        nz += e - a;
        mb->cell[i] = r;
        mb->cat[2 * i] = batch[r];
        mb->cat[2 * i + 1] = 0;
    }
    mb->indptr[n] = nz;
    AvBatch b = {n, n, mb->cell, mb->indptr, mb->indices, mb->counts, 2, mb->cat, 0, NULL};
    mb->b = b;
}

/* The machine's float32 arithmetic ceiling: each thread runs 12 independent chains of
 * vector FMAs on registers (no memory), 16 lanes with AVX-512, else 8 with AVX2+FMA. */
#define FMA_CHAINS(V, set1, fmadd, first, n)                                                       \
    do {                                                                                           \
        V acc[12], m = set1(0.999999f), c = set1(1e-7f);                                           \
        for (int q = 0; q < 12; q++) acc[q] = set1(1.0f + 1e-3f * (float)q);                       \
        for (long it = 0; it < (n); it++)                                                          \
            for (int q = 0; q < 12; q++) acc[q] = fmadd(acc[q], m, c);                             \
        float s = 0;                                                                               \
        for (int q = 0; q < 12; q++) s += first(acc[q]);                                           \
        return s;                                                                                  \
    } while (0)
__attribute__((target("avx512f"))) static float fma_chains16(long n) {
    FMA_CHAINS(__m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_cvtss_f32, n);
}
__attribute__((target("avx2,fma"))) static float fma_chains8(long n) {
    FMA_CHAINS(__m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_cvtss_f32, n);
}

static double fma_peak_gflops(int threads) {
    int wide = __builtin_cpu_supports("avx512f");
    long n = 4000000;
    double best = 1e30;
    volatile float sink = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = av_now();
#pragma omp parallel num_threads(threads)
        {
            float s = wide ? fma_chains16(n) : fma_chains8(n);
#pragma omp atomic
            sink += s;
        }
        double dt = av_now() - t0;
        if (dt < best) best = dt;
    }
    return 2.0 * 12 * (wide ? 16 : 8) * (double)n * threads / best / 1e9;
}

static void adam_all(AvGraph *g, AvAdam *ad, float *m, float *v) {
    ad->step++;
    for (int i = 0; i < g->n_params; i++) {
        AvTensor *p = g->params[i];
        if (!p->used) continue;
        int64_t o = p->offset;
        av_adam_update(ad, g->param_v + o, g->param_g + o, m + o, v + o, p->rows * p->cols);
    }
}

int main(int argc, char **argv) {
    int threads = 2, B = 128, reps = 200, json = 0, per_node = 0;
    int64_t G = 2000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            B = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--genes") && i + 1 < argc)
            G = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--nodes"))
            per_node = 1;
        else if (!strcmp(argv[i], "--cpu"))
            use_cpu = 1;
        else {
            fprintf(stderr, "usage: step_bench [--threads T] [--batch B] [--genes G] "
                            "[--reps R] [--json] [--nodes] [--cpu]\n");
            return 2;
        }
    }
    omp_set_num_threads(threads);
    openblas_set_num_threads(1);

    /* data: 16 minibatches of simulated cells */
    int chunks = 16;
    int64_t n_cells = (int64_t)B * chunks;
    AvSimParams sp;
    av_sim_defaults(&sp);
    sp.n_cells = n_cells;
    sp.n_genes = G;
    sp.n_batches = 4;
    sp.n_types = 10;
    char err[512] = "";
    AvSim *sim = av_sim_create(&sp, err);
    AvCsr x;
    int32_t *bcode = malloc(sizeof(int32_t) * (size_t)n_cells);
    if (!sim || av_sim_cells(sim, 0, n_cells, &x, bcode, NULL, err)) {
        fprintf(stderr, "step_bench: %s\n", err);
        return 1;
    }
    int64_t nnz = x.indptr[n_cells], max_row = 0;
    for (int64_t i = 0; i < n_cells; i++)
        if (x.indptr[i + 1] - x.indptr[i] > max_row) max_row = x.indptr[i + 1] - x.indptr[i];
    Mini mb;
    mb.indptr = malloc(sizeof(int64_t) * (size_t)(B + 1));
    mb.cell = malloc(sizeof(int64_t) * (size_t)B);
    mb.indices = malloc(sizeof(int32_t) * (size_t)(B * max_row + 1));
    mb.counts = malloc(sizeof(float) * (size_t)(B * max_row + 1));
    mb.cat = malloc(sizeof(int32_t) * (size_t)(2 * B));

    AvScviConfig cfg;
    av_scvi_defaults(&cfg);
    cfg.n_input = G;
    cfg.n_batch = 4;
    cfg.n_labels = 1;
    AvScvi model;
    av_scvi_build(&model, &cfg, B, 0);
    double lm[4] = {8, 8, 8, 8}, lv[4] = {0.25, 0.25, 0.25, 0.25};
    av_scvi_set_library_prior(&model, lm, lv);
    av_scvi_set_kl_weight(&model, 0.5f);
    AvGraph *g = &model.g;
    AvAdam ad = av_adam_defaults();
    float *am = calloc((size_t)g->param_size, sizeof(float));
    float *av = calloc((size_t)g->param_size, sizeof(float));

    /* operands of the decoder head's GEMM shape, for the GEMM rates */
    int64_t H = cfg.n_hidden, L = cfg.n_latent;
    float *ga = calloc((size_t)(B * H), sizeof(float)),
          *gb = calloc((size_t)(H * G), sizeof(float));
    float *gc = calloc((size_t)(B * G), sizeof(float));
    for (int64_t i = 0; i < B * H; i++) ga[i] = (float)(i % 7) * 0.1f;
    for (int64_t i = 0; i < H * G; i++) gb[i] = (float)(i % 5) * 0.1f;

    /* phases through the real entry points; after each timed step, atlasvi's GEMM at the
     * decoder head's shape (one warm-up call, then three timed, operands hot), so that the
     * step and the GEMM rate of the floor are sampled in the same minutes of a machine
     * whose speed drifts */
    int warm = 10;
    double *t_gemm = malloc(sizeof(double) * (size_t)reps);
    double *t_data = malloc(sizeof(double) * (size_t)reps),
           *t_fwd = malloc(sizeof(double) * (size_t)reps);
    double *t_bwd = malloc(sizeof(double) * (size_t)reps),
           *t_opt = malloc(sizeof(double) * (size_t)reps);
    double *t_step = malloc(sizeof(double) * (size_t)reps);
    for (int s = -warm; s < reps; s++) {
        double t0 = now();
        fill(&mb, &x, bcode, (int64_t)((s + warm) % chunks) * B, B);
        double t1 = now();
        g->step = s + warm;
        av_graph_forward(g, &mb.b);
        double t2 = now();
        av_graph_backward(g);
        double t3 = now();
        adam_all(g, &ad, am, av);
        double t4 = now();
        if (s < 0) continue;
        t_data[s] = t1 - t0, t_fwd[s] = t2 - t1, t_bwd[s] = t3 - t2, t_opt[s] = t4 - t3;
        t_step[s] = t4 - t0;
        av_sgemm(0, 0, B, G, H, ga, H, gb, G, 0.0f, gc, G);
        double t5 = now();
        for (int r = 0; r < 3; r++) av_sgemm(0, 0, B, G, H, ga, H, gb, G, 0.0f, gc, G);
        t_gemm[s] = (now() - t5) / 3;
    }
    double ms_data = 1e3 * median(t_data, reps), ms_fwd = 1e3 * median(t_fwd, reps);
    double ms_bwd = 1e3 * median(t_bwd, reps), ms_opt = 1e3 * median(t_opt, reps);
    double ms_step = 1e3 * median(t_step, reps);

    /* per op: the same tape replayed node by node (mean over reps) */
    int nn = g->n_nodes;
    double op_t[AV_OP_N + 2];
    memset(op_t, 0, sizeof op_t);
    double *nf = calloc((size_t)nn, sizeof(double)), *nb = calloc((size_t)nn, sizeof(double));
    int preps = reps / 2 > 10 ? reps / 2 : 10;
    for (int s = 0; s < preps; s++) {
        fill(&mb, &x, bcode, (int64_t)(s % chunks) * B, B);
        g->batch = &mb.b;
        g->n = B;
        g->step = 1000 + s;
        memset(g->loss_terms, 0, sizeof g->loss_terms);
        for (int i = 0; i < nn; i++) {
            double t0 = now();
            av_node_forward(g, &g->nodes[i]);
            nf[i] += now() - t0;
            op_t[g->nodes[i].kind] += now() - t0;
        }
        double t0 = now();
        av_graph_zero_grads(g, nn - 1);
        g->loss->g[0] = 1.0f;
        op_t[AV_OP_N] += now() - t0;
        for (int i = nn - 1; i >= 0; i--) {
            double t1 = now();
            av_node_backward(g, &g->nodes[i]);
            nb[i] += now() - t1;
            op_t[g->nodes[i].kind] += now() - t1;
        }
        t0 = now();
        adam_all(g, &ad, am, av);
        op_t[AV_OP_N + 1] += now() - t0;
    }

    /* GEMM rate: the decoder head's shape, each thread its share of rows */
    int greps = 200;
    double gt = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now();
        for (int r = 0; r < greps; r++) {
#pragma omp parallel
            {
                int t = omp_get_thread_num(), nt = omp_get_num_threads();
                int lo = B * t / nt, hi = B * (t + 1) / nt;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, hi - lo, (int)G, (int)H,
                            1.0f, ga + lo * H, (int)H, gb, (int)G, 0.0f, gc + lo * G, (int)G);
            }
        }
        double dt = (now() - t0) / greps;
        if (dt < gt) gt = dt;
    }
    double gflops = 2.0 * B * G * H / gt / 1e9;
    /* atlasvi's own GEMM (src/gemm.c) on the whole team: the median of the samples taken
     * between the timed steps */
    double av_gflops = 2.0 * B * G * H / median(t_gemm, reps) / 1e9;
    double fma_gflops = fma_peak_gflops(threads);
    /* the machine's best float32 GEMM rate: one square sgemm with OpenBLAS's own threads
     * (as many as the step uses), best of a few calls */
    int PN = 1024;
    float *pa = malloc(sizeof(float) * (size_t)PN * PN),
          *pb = malloc(sizeof(float) * (size_t)PN * PN);
    float *pc = malloc(sizeof(float) * (size_t)PN * PN);
    for (int64_t i = 0; i < (int64_t)PN * PN; i++) {
        pa[i] = (float)(i % 7) * 0.1f;
        pb[i] = (float)(i % 5) * 0.1f;
    }
    openblas_set_num_threads(threads);
    double pt = 1e30;
    for (int rep = 0; rep < 6; rep++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, PN, PN, PN, 1.0f, pa, PN, pb, PN,
                    0.0f, pc, PN);
        double dt = now() - t0;
        if (rep > 0 && dt < pt) pt = dt; /* the first call warms up the threads */
    }
    openblas_set_num_threads(1);
    double peak_gflops = 2.0 * PN * PN * PN / pt / 1e9;
    free(pa), free(pb), free(pc);
    /* forward + backward GEMM FLOPs per cell: the first layer needs no input gradient */
    double nnz_cell = (double)nnz / (double)n_cells;
    double rest = 2.0 * (2 * H * L * 3 + (L + cfg.n_batch) * H * 3 + 2 * H * G * 3);
    double f_dense = 2.0 * (double)(G * H) * 2 + rest;
    double f_sparse = 2.0 * nnz_cell * (double)H * 2 + rest;
    double floor_ms = f_dense * B / (gflops * 1e9) * 1e3;
    double floor_peak_ms = f_dense * B / (peak_gflops * 1e9) * 1e3;

    printf(
        "step_bench: %d threads, batch %d, %lld genes, %.0f non-zeros/cell, median of %d steps\n",
        threads, B, (long long)G, nnz_cell, reps);
    printf(
        "  step %.3f ms = %.0f cells/s | data %.3f forward %.3f backward %.3f optimiser %.3f ms\n",
        ms_step, B / ms_step * 1e3, ms_data, ms_fwd, ms_bwd, ms_opt);
    double tot = 0;
    for (int k = 0; k < AV_OP_N + 2; k++) tot += op_t[k];
    printf("  per op (forward + backward, mean ms per step):\n");
    for (int k = 0; k < AV_OP_N + 2; k++) {
        if (op_t[k] <= 0) continue;
        const char *nm = k == AV_OP_N ? "zero gradients" : k == AV_OP_N + 1 ? "adam" : op_name(k);
        printf("    %-18s %8.3f  %4.1f%%\n", nm, 1e3 * op_t[k] / preps, 100 * op_t[k] / tot);
    }
    if (per_node) {
        printf("  per node (ms per step): forward backward  kind [rows x cols of output]\n");
        for (int i = 0; i < nn; i++)
            printf("    %2d %8.3f %8.3f  %s [%lld]\n", i, 1e3 * nf[i] / preps, 1e3 * nb[i] / preps,
                   op_name(g->nodes[i].kind), (long long)g->nodes[i].out->cols);
    }
    free(nf), free(nb);
    printf("  sgemm %dx%lldx%lld: %.1f GFLOP/s; GEMM FLOPs/cell dense %.2f M (sparse first layer "
           "%.2f M); floor %.3f ms/step = %.0f cells/s; step/floor %.1fx\n",
           B, (long long)G, (long long)H, gflops, f_dense / 1e6, f_sparse / 1e6, floor_ms,
           B / floor_ms * 1e3, ms_step / floor_ms);
    printf("  av_sgemm %dx%lldx%lld (%d threads, between the steps): %.1f GFLOP/s; FMA peak (%d "
           "threads, registers "
           "only): %.1f GFLOP/s\n",
           B, (long long)G, (long long)H, threads, av_gflops, threads, fma_gflops);
    printf("  sgemm %dx%dx%d (%d OpenBLAS threads): %.1f GFLOP/s; floor %.3f ms/step = %.0f "
           "cells/s; step/floor %.1fx\n",
           PN, PN, PN, threads, peak_gflops, floor_peak_ms, B / floor_peak_ms * 1e3,
           ms_step / floor_peak_ms);
    if (json) {
        printf(
            "STEP_JSON {\"threads\": %d, \"batch\": %d, \"genes\": %lld, \"nnz_per_cell\": %.1f, "
            "\"reps\": %d, \"step_ms\": %.4f, \"cells_per_s\": %.1f, \"phases\": {\"data\": %.4f, "
            "\"forward\": %.4f, \"backward\": %.4f, \"optimiser\": %.4f, \"all-reduce (1 rank)\": "
            "0}, "
            "\"ops\": {",
            threads, B, (long long)G, nnz_cell, reps, ms_step, B / ms_step * 1e3, ms_data, ms_fwd,
            ms_bwd, ms_opt);
        int first = 1;
        for (int k = 0; k < AV_OP_N + 2; k++) {
            if (op_t[k] <= 0) continue;
            const char *nm = k == AV_OP_N       ? "zero gradients"
                             : k == AV_OP_N + 1 ? "adam"
                                                : op_name(k);
            printf("%s\"%s\": %.4f", first ? "" : ", ", nm, 1e3 * op_t[k] / preps);
            first = 0;
        }
        printf(
            "}, \"gemm_gflops\": %.2f, \"flops_dense_per_cell\": %.0f, \"flops_sparse_per_cell\": "
            "%.0f, \"floor_ms\": %.4f, \"floor_cells_per_s\": %.1f, \"gemm_peak_n\": %d, "
            "\"gemm_peak_gflops\": %.2f, \"floor_peak_ms\": %.4f, \"floor_peak_cells_per_s\": "
            "%.1f, \"av_sgemm_gflops\": %.2f, \"fma_peak_gflops\": %.2f}\n",
            gflops, f_dense, f_sparse, floor_ms, B / floor_ms * 1e3, PN, peak_gflops, floor_peak_ms,
            B / floor_peak_ms * 1e3, av_gflops, fma_gflops);
    }
    av_scvi_free(&model);
    av_sim_free(sim);
    av_csr_free(&x);
    free(bcode), free(am), free(av), free(ga), free(gb), free(gc);
    free(t_data), free(t_fwd), free(t_bwd), free(t_opt), free(t_step), free(t_gemm);
    free(mb.indptr), free(mb.cell), free(mb.indices), free(mb.counts), free(mb.cat);
    return 0;
}
