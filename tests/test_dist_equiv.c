/* Data-parallel equivalence (design.md "Distribution", model-spec.md 6.10).
 *
 *   test_dist_equiv grad                 under mpiexec -n 1..4: for a fixed parameter state
 *                                        and one global minibatch of 37 cells split unevenly
 *                                        over the ranks (and with one rank holding none),
 *                                        the all-reduced N-rank gradient, loss and BatchNorm
 *                                        running statistics equal rank 0's 1-rank ones.
 *   test_dist_equiv train OUT            under mpiexec: av_train for 5 epochs on a fixed
 *                                        synthetic set; rank 0 writes the per-epoch history.
 *   test_dist_equiv train OUT full       the same with one full-batch step per epoch (the
 *                                        global minibatch is then rank-independent).
 *   test_dist_equiv compare_exact A B T  full-batch histories and final weights agree to T.
 *   test_dist_equiv compare A B TOL      the two histories agree within TOL (relative) from
 *                                        epoch 1 on (no MPI).
 *   test_dist_equiv latent A B TOL       obsm/X_scVI of two .h5ad files agree row for row,
 *                                        rows matched by obs name (no MPI).
 *   test_dist_equiv mkbad SRC DST        copies an .h5ad with CSR X and writes a negative
 *                                        count into a cell near the end (no MPI).
 */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "models/scvi.h"
#include "src/app.h"
#include "src/rng.h"
#include "src/train.h"

static int failures = 0;
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "rank %d: %s:%d: FAIL %s: ", dist_rank(), __FILE__, __LINE__, #cond);  \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

/* ------------------------------------------------------------------ synthetic cells */

/* n cells x G genes with cell-type structure and a batch effect; every rank builds the
 * same matrix (a counter-based stream per cell). Every cell has counts. */
typedef struct {
    int64_t n, G;
    int64_t *indptr;
    int32_t *indices;
    float *data;
    int32_t *cat; /* [n, 2]: batch, label */
} Cells;

static void cells_make(Cells *c, int64_t n, int64_t G, uint64_t seed) {
    c->n = n;
    c->G = G;
    c->indptr = malloc(sizeof(int64_t) * (size_t)(n + 1));
    c->indices = malloc(sizeof(int32_t) * (size_t)(n * G));
    c->data = malloc(sizeof(float) * (size_t)(n * G));
    c->cat = malloc(sizeof(int32_t) * (size_t)(n * 2));
    /* gene profiles of 3 cell types, log-normal around a common baseline */
    double *prof = malloc(sizeof(double) * (size_t)(3 * G));
    AvRngSeq rs;
    av_seq_init(&rs, seed, AV_STREAM_SIM, 1u << 30);
    for (int64_t j = 0; j < G; j++) {
        double base = av_seq_normal(&rs);
        for (int t = 0; t < 3; t++) prof[t * G + j] = exp(base + 0.8 * av_seq_normal(&rs));
    }
    for (int t = 0; t < 3; t++) {
        double s = 0;
        for (int64_t j = 0; j < G; j++) s += prof[t * G + j];
        for (int64_t j = 0; j < G; j++) prof[t * G + j] /= s;
    }
    int64_t nz = 0;
    for (int64_t i = 0; i < n; i++) {
        av_seq_init(&rs, seed, AV_STREAM_SIM, (uint64_t)i);
        int type = (int)(av_seq_uniform(&rs) * 3) % 3, batch = (int)(i % 2);
        double lib = exp(6.0 + 0.5 * av_seq_normal(&rs));
        c->indptr[i] = nz;
        int64_t start = nz;
        for (int64_t j = 0; j < G; j++) {
            double lam = lib * prof[type * G + j] * (batch ? 1.0 + 0.5 * (j % 3 == 0) : 1.0);
            int64_t k = av_seq_poisson(&rs, lam);
            if (k > 0) {
                c->indices[nz] = (int32_t)j;
                c->data[nz++] = (float)k;
            }
        }
        if (nz == start) { /* no empty cells */
            c->indices[nz] = (int32_t)(i % G);
            c->data[nz++] = 1.0f;
        }
        c->cat[2 * i] = batch;
        c->cat[2 * i + 1] = 0;
    }
    c->indptr[n] = nz;
    free(prof);
}

static void cells_free(Cells *c) {
    free(c->indptr);
    free(c->indices);
    free(c->data);
    free(c->cat);
}

/* A batch of cells [lo, hi) of c (global ids id0 + i) with n_global cells overall. */
typedef struct {
    AvBatch b;
    int64_t *indptr, *cell;
} Part;

static void part_make(Part *p, const Cells *c, int64_t lo, int64_t hi, int64_t n_global,
                      int64_t id0) {
    int64_t n = hi - lo;
    p->indptr = malloc(sizeof(int64_t) * (size_t)(n + 1));
    p->cell = malloc(sizeof(int64_t) * (size_t)(n + 1));
    for (int64_t i = 0; i <= n; i++) p->indptr[i] = c->indptr[lo + i] - c->indptr[lo];
    for (int64_t i = 0; i < n; i++) p->cell[i] = id0 + lo + i;
    AvBatch b = {(int)n,
                 n_global,
                 p->cell,
                 p->indptr,
                 c->indices + c->indptr[lo],
                 c->data + c->indptr[lo],
                 2,
                 c->cat + 2 * lo,
                 0,
                 NULL};
    p->b = b;
}

static void part_free(Part *p) {
    free(p->indptr);
    free(p->cell);
}

/* ------------------------------------------------------------------ gradient equivalence */

static int reduce_calls = 0;
/* AvReduceFn for the BatchNorm statistics: a sum over ranks (counted, so that every rank
 * can be checked to make the same number of collective calls). */
static void reduce_sum(double *buf, int64_t n) {
    reduce_calls++;
    dist_allreduce_f64(buf, n);
}

/* Largest |a - b| over ranks of a buffer against rank 0's copy. */
static double spread_over_ranks(const float *v, int64_t n) {
    float *r0 = malloc(sizeof(float) * (size_t)(n + 1));
    memcpy(r0, v, sizeof(float) * (size_t)n);
    dist_bcast(r0, (int64_t)sizeof(float) * n, 0);
    double d = 0;
    for (int64_t k = 0; k < n; k++) d = fmax(d, fabs((double)v[k] - r0[k]));
    free(r0);
    dist_allreduce_max_f64(&d, 1);
    return d;
}

static double worst_grad = 0, worst_loss = 0, worst_bn = 0;

/* One case: bounds[r]..bounds[r+1] of the 37 cells on rank r. with_reduce = 0 is the
 * negative control: BatchNorm statistics of the local cells only must NOT match. */
static void grad_case(const char *name, const AvScviConfig *cfg, const Cells *c,
                      const int64_t *bounds, int with_reduce) {
    int rank = dist_rank(), P = dist_size();
    int64_t NG = c->n, id0 = 5000000000LL; /* global ids beyond 2^32 keep the RNG honest */
    AvScvi dm, ref;
    av_scvi_build(&dm, cfg, NG, 42);
    av_scvi_set_kl_weight(&dm, 0.7f);
    const double lib_mean[2] = {6.0, 6.3}, lib_var[2] = {0.3, 0.2};
    av_scvi_set_library_prior(&dm, lib_mean, lib_var);
    /* identical weights everywhere: built from the same seed; check it, then make sure */
    double init_spread = spread_over_ranks(dm.g.param_v, dm.g.param_size);
    CHECK(init_spread == 0, "%s: initial weights differ across ranks by %g", name, init_spread);
    dist_bcast(dm.g.param_v, (int64_t)sizeof(float) * dm.g.param_size, 0);
    dm.g.reduce = with_reduce && P > 1 ? reduce_sum : NULL;
    Part part;
    part_make(&part, c, bounds[rank], bounds[rank + 1], NG, id0);
    Part whole;
    if (rank == 0) {
        av_scvi_build(&ref, cfg, NG, 42);
        av_scvi_set_kl_weight(&ref, 0.7f);
        av_scvi_set_library_prior(&ref, lib_mean, lib_var);
        memcpy(ref.g.param_v, dm.g.param_v, sizeof(float) * (size_t)dm.g.param_size);
        ref.g.reduce = NULL;
        part_make(&whole, c, 0, NG, NG, id0);
    }
    double case_grad = 0, case_loss = 0, case_bn = 0;
    /* two steps: different dropout masks and noise (keyed by step), and the running
     * statistics accumulate over both */
    for (int step = 0; step < 2; step++) {
        dm.g.step = step;
        reduce_calls = 0;
        av_graph_forward(&dm.g, &part.b);
        av_graph_backward(&dm.g);
        dist_allreduce_f32(dm.g.param_g, dm.g.param_size);
        double lt[AV_MAX_LOSS_TERMS + 1];
        lt[0] = dm.loss->v[0];
        for (int t = 0; t < AV_MAX_LOSS_TERMS; t++) lt[t + 1] = dm.g.loss_terms[t];
        dist_allreduce_f64(lt, AV_MAX_LOSS_TERMS + 1);
        /* every rank made the same collective calls and holds the same state */
        int64_t calls[2] = {reduce_calls, -reduce_calls};
        dist_allreduce_max_i64(calls, 2);
        CHECK(!with_reduce || P == 1 || (calls[0] == reduce_calls && -calls[1] == reduce_calls),
              "%s: reduce calls differ across ranks (%d here, %lld..%lld)", name, reduce_calls,
              (long long)-calls[1], (long long)calls[0]);
        double gs = spread_over_ranks(dm.g.param_g, dm.g.param_size);
        CHECK(gs == 0, "%s: reduced gradients differ across ranks by %g", name, gs);
        double bs = 0;
        for (int k = 0; k < dm.g.n_buffers; k++) {
            AvTensor *t = dm.g.buffers[k];
            bs = fmax(bs, spread_over_ranks(t->v, t->rows * t->cols));
        }
        if (with_reduce)
            CHECK(bs == 0, "%s: BatchNorm running statistics differ across ranks by %g", name, bs);
        double res[3] = {0, 0, 0}; /* worst gradient, loss, buffer relative difference */
        if (rank == 0) {
            ref.g.step = step;
            av_graph_forward(&ref.g, &whole.b);
            av_graph_backward(&ref.g);
            /* A linear bias feeding a training-mode BatchNorm has a gradient that is
             * mathematically zero (the batch mean removes it): what the backward pass
             * computes there is float round-off of sum_i dy_i, which no summation order
             * reproduces. Such a bias (max|g_1| below 1e-3 of its layer's weight gradient)
             * is measured against the weight gradient's scale instead of its own noise. */
            for (int i = 0; i < dm.g.n_params; i++) {
                AvTensor *p = dm.g.params[i], *q = ref.g.params[i];
                if (!p->used) continue;
                int64_t n = p->rows * p->cols;
                double dmax = 0, gmax = 0, wmax = 0;
                for (int64_t k = 0; k < n; k++) {
                    dmax = fmax(dmax, fabs((double)p->g[k] - q->g[k]));
                    gmax = fmax(gmax, fabs((double)q->g[k]));
                }
                size_t len = strlen(q->name);
                if (len > 5 && !strcmp(q->name + len - 5, ".bias")) {
                    char wname[256];
                    snprintf(wname, sizeof wname, "%.*sweight", (int)(len - 4), q->name);
                    AvTensor *w = av_param_find(&ref.g, wname);
                    for (int64_t k = 0; w && k < w->rows * w->cols; k++)
                        wmax = fmax(wmax, fabs((double)w->g[k]));
                }
                int floored = gmax < 1e-3 * wmax;
                if (floored && step == 0 && with_reduce && P > 1 && !strstr(name, "empty"))
                    printf("  (%s: max|g_1| = %.2g, numerically zero; scale: its weight's %.3g)\n",
                           p->name, gmax, wmax);
                double rel = dmax / (floored ? wmax : gmax);
                res[0] = fmax(res[0], rel);
                if (with_reduce && rel > 1e-5)
                    fprintf(stderr, "  %s step %d: %s: max|g_N - g_1| = %.3g, max|g_1| = %.3g\n",
                            name, step, p->name, dmax, gmax);
            }
            double l1 = ref.loss->v[0];
            res[1] = fabs(lt[0] - l1) / fabs(l1);
            for (int t = 0; t < AV_MAX_LOSS_TERMS; t++) {
                double a = ref.g.loss_terms[t];
                if (a != 0 || lt[t + 1] != 0)
                    res[1] = fmax(res[1], fabs(lt[t + 1] - a) / fmax(fabs(a), 1e-30));
            }
            for (int k = 0; k < dm.g.n_buffers; k++) {
                AvTensor *t = dm.g.buffers[k], *u = ref.g.buffers[k];
                for (int64_t e = 0; e < t->rows * t->cols; e++)
                    res[2] = fmax(res[2], fabs((double)t->v[e] - u->v[e]) /
                                              fmax(fabs((double)u->v[e]), 1e-3));
            }
        }
        dist_bcast(res, sizeof res, 0);
        case_grad = fmax(case_grad, res[0]);
        case_loss = fmax(case_loss, res[1]);
        case_bn = fmax(case_bn, res[2]);
    }
    if (rank == 0)
        printf("%-34s N=%d  grad rel %.2e  loss rel %.2e  bn-running rel %.2e%s\n", name, P,
               case_grad, case_loss, case_bn, with_reduce ? "" : "  (control: must differ)");
    if (with_reduce) {
        /* Tolerance: the same sums in float32 in another order (each rank's GEMM sums its
         * own cells, then the all-reduce adds the ranks' partial sums). */
        CHECK(case_grad <= 1e-5, "%s: gradient rel diff %g > 1e-5", name, case_grad);
        CHECK(case_loss <= 1e-5, "%s: loss rel diff %g > 1e-5", name, case_loss);
        CHECK(case_bn <= 1e-5, "%s: running statistics rel diff %g > 1e-5", name, case_bn);
        worst_grad = fmax(worst_grad, case_grad);
        worst_loss = fmax(worst_loss, case_loss);
        worst_bn = fmax(worst_bn, case_bn);
    } else {
        CHECK(case_grad > 1e-3, "%s: local-only BatchNorm statistics went unnoticed (%g)", name,
              case_grad);
    }
    part_free(&part);
    if (rank == 0) {
        part_free(&whole);
        av_scvi_free(&ref);
    }
    av_scvi_free(&dm);
}

static int run_grad(void) {
    int P = dist_size();
    enum { NG = 37 };
    Cells c;
    cells_make(&c, NG, 200, 7);
    AvScviConfig cfgs[2];
    const char *cfg_names[2] = {"default(zinb,gene)", "nb,gene-batch,latent-lib"};
    av_scvi_defaults(&cfgs[0]);
    cfgs[0].n_input = 200;
    cfgs[0].n_hidden = 32;
    cfgs[0].n_latent = 5;
    cfgs[0].n_batch = 2;
    cfgs[1] = cfgs[0];
    cfgs[1].likelihood = AV_LIK_NB;
    cfgs[1].dispersion = AV_DISP_GENE_BATCH;
    cfgs[1].use_observed_lib_size = 0;
    cfgs[1].n_layers = 2;
    int64_t *bounds = malloc(sizeof(int64_t) * (size_t)(P + 1));
    for (int k = 0; k < 2; k++) {
        char name[96];
        /* uneven: rank r gets a share proportional to r + 1 */
        for (int r = 0; r <= P; r++) bounds[r] = (int64_t)NG * r * (r + 1) / (P * (P + 1));
        snprintf(name, sizeof name, "%s uneven", cfg_names[k]);
        grad_case(name, &cfgs[k], &c, bounds, 1);
        if (P > 1) {
            /* rank e holds no cell: the others split the 37 evenly */
            int e = (P - 1) / 2;
            bounds[0] = 0;
            for (int r = 0, q = 0; r < P; r++) {
                if (r != e) q++;
                bounds[r + 1] = (int64_t)NG * q / (P - 1);
            }
            snprintf(name, sizeof name, "%s rank %d empty", cfg_names[k], e);
            grad_case(name, &cfgs[k], &c, bounds, 1);
            /* negative control: without the statistics reduction the test must see it */
            for (int r = 0; r <= P; r++) bounds[r] = (int64_t)NG * r * (r + 1) / (P * (P + 1));
            snprintf(name, sizeof name, "%s no-bn-reduce", cfg_names[k]);
            grad_case(name, &cfgs[k], &c, bounds, 0);
        }
    }
    free(bounds);
    cells_free(&c);
    if (dist_rank() == 0)
        printf("worst over cases, N=%d: gradient %.2e, loss %.2e, running stats %.2e (tol 1e-5)\n",
               P, worst_grad, worst_loss, worst_bn);
    return 0;
}

/* ------------------------------------------------------------------ short training */

/* full = 0: 1200 cells in minibatches of 128 (global minibatches depend on the number of
 * ranks). full = 1: 200 cells, one full-batch step per epoch (batch size 256 > 180 train
 * cells), so every step sees the same global set of cells on any number of ranks and the
 * whole trainer must follow the 1-rank trajectory to float tolerance; the final weights
 * and BatchNorm running statistics go to OUT.w. */
static int run_train(const char *out, int full) {
    int rank = dist_rank(), P = dist_size();
    const int64_t NCELL = full ? 200 : 1200;
    enum { NGENE = 200 };
    Cells c;
    cells_make(&c, NCELL, NGENE, 11);
    /* this rank's block, balanced by non-zeros as av_setup_load plans it */
    int64_t *bounds = malloc(sizeof(int64_t) * (size_t)(P + 1));
    dist_plan_shards(c.indptr, NCELL, P, bounds);
    int64_t lo = bounds[rank], hi = bounds[rank + 1], nl = hi - lo;
    free(bounds);
    AvTrainData d;
    memset(&d, 0, sizeof d);
    d.x.n_rows = nl;
    d.x.n_cols = NGENE;
    d.x.indptr = malloc(sizeof(int64_t) * (size_t)(nl + 1));
    int64_t nz0 = c.indptr[lo], nnz = c.indptr[hi] - nz0;
    for (int64_t i = 0; i <= nl; i++) d.x.indptr[i] = c.indptr[lo + i] - nz0;
    d.x.indices = malloc(sizeof(int32_t) * (size_t)(nnz + 1));
    d.x.data = malloc(sizeof(float) * (size_t)(nnz + 1));
    memcpy(d.x.indices, c.indices + nz0, sizeof(int32_t) * (size_t)nnz);
    memcpy(d.x.data, c.data + nz0, sizeof(float) * (size_t)nnz);
    d.row0 = lo;
    d.n_obs = NCELL;
    d.n_cat = 2;
    d.cat = malloc(sizeof(int32_t) * (size_t)(2 * nl + 1));
    memcpy(d.cat, c.cat + 2 * lo, sizeof(int32_t) * (size_t)(2 * nl));
    d.n_cont = 0;
    d.cont = malloc(sizeof(float));
    AvComm comm = av_comm_world();

    /* the library prior (reduced over ranks) against two passes over every cell */
    double pm[2], pv[2], sm[2] = {0, 0}, sv[2] = {0, 0}, sn[2] = {0, 0};
    av_library_prior(&d, &comm, 2, pm, pv);
    for (int pass = 0; pass < 2; pass++)
        for (int64_t i = 0; i < NCELL; i++) {
            double tot = 0;
            for (int64_t k = c.indptr[i]; k < c.indptr[i + 1]; k++) tot += c.data[k];
            int b = c.cat[2 * i];
            if (pass == 0) {
                sm[b] += log(tot);
                sn[b] += 1;
            } else {
                sv[b] += (log(tot) - sm[b] / sn[b]) * (log(tot) - sm[b] / sn[b]);
            }
        }
    for (int b = 0; b < 2; b++) {
        double em = sm[b] / sn[b], ev = sv[b] / sn[b];
        CHECK(fabs(pm[b] - em) <= 1e-9 * fabs(em) && fabs(pv[b] - ev) <= 1e-6 * ev,
              "library prior of batch %d: %.12g, %.12g, expected %.12g, %.12g", b, pm[b], pv[b], em,
              ev);
    }
    cells_free(&c);

    AvScviConfig cfg;
    av_scvi_defaults(&cfg);
    cfg.n_input = NGENE;
    cfg.n_hidden = 32;
    cfg.n_latent = 5;
    cfg.n_batch = 2;
    AvTrainOptions to;
    av_train_defaults(&to);
    to.max_epochs = 5;
    to.batch_size = full ? 256 : 128;
    to.seed = 3;
    to.n_epochs_kl_warmup = 5; /* the KL weight moves within the run */
    AvScvi m;
    av_scvi_build(&m, &cfg, to.batch_size, to.seed);
    dist_bcast(m.g.param_v, (int64_t)sizeof(float) * m.g.param_size, 0);
    AvOptState st;
    av_opt_state_init(&st, &m, &to);
    AvHistory h;
    memset(&h, 0, sizeof h);
    char err[512] = "";
    int rc = av_train(&m, &d, &to, &comm, &st, &h, err);
    CHECK(rc == 0, "av_train: %s", err);
    CHECK(h.n_epochs == 5, "%d epochs", h.n_epochs);
    /* every rank holds the same model afterwards */
    double ws = spread_over_ranks(m.g.param_v, m.g.param_size);
    CHECK(ws == 0, "weights differ across ranks after training by %g", ws);
    if (rank == 0) {
        FILE *f = fopen(out, "w");
        CHECK(f != NULL, "cannot write %s", out);
        if (f) {
            for (int e = 0; e < h.n_epochs; e++)
                fprintf(f, "%d %.9g %.9g %.9g %.9g\n", e, h.elbo_train[e], h.rec_train[e],
                        h.kl_train[e], h.loss_train[e]);
            fclose(f);
        }
        char wpath[1024];
        snprintf(wpath, sizeof wpath, "%s.w", out);
        f = full ? fopen(wpath, "wb") : NULL;
        if (f) {
            fwrite(m.g.param_v, sizeof(float), (size_t)m.g.param_size, f);
            for (int k = 0; k < m.g.n_buffers; k++) /* BatchNorm running statistics */
                fwrite(m.g.buffers[k]->v, sizeof(float),
                       (size_t)(m.g.buffers[k]->rows * m.g.buffers[k]->cols), f);
            fclose(f);
        }
        for (int e = 0; e < h.n_epochs; e++)
            printf("N=%d epoch %d: elbo_train %.4f rec %.4f kl %.4f loss %.4f\n", P, e,
                   h.elbo_train[e], h.rec_train[e], h.kl_train[e], h.loss_train[e]);
    }
    av_history_free(&h);
    av_opt_state_free(&st);
    av_scvi_free(&m);
    av_train_data_free(&d);
    return 0;
}

/* Why a tolerance and not equality: with N ranks every global minibatch takes a share of
 * each rank's own shuffled cells, so the sequence of minibatches (and so the trajectory)
 * differs from the 1-rank run even though the train/validation split, the objective and
 * each step's normalisation are the same. The loss curves must agree as curves. */
static int run_compare(const char *a, const char *b, double tol) {
    FILE *fa = fopen(a, "r"), *fb = fopen(b, "r");
    if (!fa || !fb) {
        fprintf(stderr, "cannot read %s or %s\n", a, b);
        return 1;
    }
    int n = 0;
    double worst = 0, first[2] = {0, 0}, last[2] = {0, 0};
    for (;;) {
        int ea, eb;
        double va[4], vb[4];
        int ka = fscanf(fa, "%d %lf %lf %lf %lf", &ea, &va[0], &va[1], &va[2], &va[3]);
        int kb = fscanf(fb, "%d %lf %lf %lf %lf", &eb, &vb[0], &vb[1], &vb[2], &vb[3]);
        if (ka != 5 || kb != 5) {
            CHECK(ka != 5 && kb != 5, "histories of different lengths");
            break;
        }
        double rel = fabs(va[0] - vb[0]) / fabs(va[0]);
        double rl = fabs(va[3] - vb[3]) / fabs(va[3]);
        printf("epoch %d: elbo_train %.4f vs %.4f (rel %.2e); train_loss %.4f vs %.4f (rel "
               "%.2e)\n",
               ea, va[0], vb[0], rel, va[3], vb[3], rl);
        CHECK(isfinite(va[0]) && isfinite(vb[0]), "non-finite elbo at epoch %d", ea);
        if (n == 0) first[0] = va[0], first[1] = vb[0];
        last[0] = va[0];
        last[1] = vb[0];
        if (ea >= 1) {
            CHECK(rel <= tol, "epoch %d: elbo_train rel diff %.3g > %g", ea, rel, tol);
            CHECK(rl <= tol, "epoch %d: train_loss rel diff %.3g > %g", ea, rl, tol);
            worst = fmax(worst, fmax(rel, rl));
        }
        n++;
    }
    CHECK(n == 5, "%d epochs compared", n);
    /* the tolerance must be tighter than what training changes: both curves fall by more
     * than 5 % over the run */
    CHECK(last[0] < 0.95 * first[0] && last[1] < 0.95 * first[1],
          "elbo_train fell too little (%.4f -> %.4f, %.4f -> %.4f)", first[0], last[0], first[1],
          last[1]);
    printf("worst relative difference from epoch 1 on: %.2e (tol %g)\n", worst, tol);
    fclose(fa);
    fclose(fb);
    return failures ? 1 : 0;
}

/* The full-batch runs: every epoch's elbo, reconstruction, kl and loss and the final
 * weights agree to float tolerance (tol relative; each weight against the largest of its
 * slab). */
static int run_compare_exact(const char *a, const char *b, double tol) {
    FILE *fa = fopen(a, "r"), *fb = fopen(b, "r");
    if (!fa || !fb) {
        fprintf(stderr, "cannot read %s or %s\n", a, b);
        return 1;
    }
    double worst = 0;
    int n = 0;
    for (;;) {
        int ea, eb;
        double va[4], vb[4];
        int ka = fscanf(fa, "%d %lf %lf %lf %lf", &ea, &va[0], &va[1], &va[2], &va[3]);
        int kb = fscanf(fb, "%d %lf %lf %lf %lf", &eb, &vb[0], &vb[1], &vb[2], &vb[3]);
        if (ka != 5 || kb != 5) {
            CHECK(ka != 5 && kb != 5, "histories of different lengths");
            break;
        }
        for (int k = 0; k < 4; k++) worst = fmax(worst, fabs(va[k] - vb[k]) / fabs(va[k]));
        n++;
    }
    fclose(fa);
    fclose(fb);
    CHECK(n == 5, "%d epochs compared", n);
    char wa[1024], wb[1024];
    snprintf(wa, sizeof wa, "%s.w", a);
    snprintf(wb, sizeof wb, "%s.w", b);
    fa = fopen(wa, "rb");
    fb = fopen(wb, "rb");
    double wd = 0, wmax = 0;
    int64_t nw = 0;
    if (fa && fb) {
        float x, y;
        while (fread(&x, sizeof x, 1, fa) == 1 && fread(&y, sizeof y, 1, fb) == 1) {
            wd = fmax(wd, fabs((double)x - y));
            wmax = fmax(wmax, fabs((double)x));
            nw++;
        }
        CHECK(fread(&x, sizeof x, 1, fa) == 0 && fread(&y, sizeof y, 1, fb) == 0,
              "weight files of different sizes");
    }
    CHECK(fa && fb && nw > 0, "no weights in %s or %s", wa, wb);
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    printf("full-batch training, %s vs %s: history rel diff %.2e, weights max diff %.2e of max "
           "|w| %.3g (rel %.2e), %lld weights and running statistics (tol %g)\n",
           a, b, worst, wd, wmax, wd / wmax, (long long)nw, tol);
    CHECK(worst <= tol, "history rel diff %g > %g", worst, tol);
    CHECK(wd <= tol * wmax, "weights rel diff %g > %g", wd / wmax, tol);
    return failures ? 1 : 0;
}

/* ------------------------------------------------------------------ latents */

static float *read_obsm(const char *path, const char *key, int64_t *rows, int64_t *cols) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return NULL;
    char name[256];
    snprintf(name, sizeof name, "obsm/%s", key);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    float *v = NULL;
    if (d >= 0) {
        hid_t s = H5Dget_space(d);
        hsize_t dims[2] = {0, 0};
        if (H5Sget_simple_extent_ndims(s) == 2) {
            H5Sget_simple_extent_dims(s, dims, NULL);
            *rows = (int64_t)dims[0];
            *cols = (int64_t)dims[1];
            v = malloc(sizeof(float) * (size_t)(dims[0] * dims[1] + 1));
            if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0) {
                free(v);
                v = NULL;
            }
        }
        H5Sclose(s);
        H5Dclose(d);
    }
    H5Fclose(f);
    return v;
}

/* obs names of an .h5ad written by atlasvi (which may hold no X): obs/<_index attr>. */
static char **read_obs_names(const char *path, int64_t *n) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return NULL;
    char idx[128] = "_index", name[160];
    hid_t a = H5Aexists_by_name(f, "obs", "_index", H5P_DEFAULT) > 0
                  ? H5Aopen_by_name(f, "obs", "_index", H5P_DEFAULT, H5P_DEFAULT)
                  : -1;
    hid_t vt = H5Tcopy(H5T_C_S1);
    H5Tset_size(vt, H5T_VARIABLE);
    H5Tset_cset(vt, H5T_CSET_UTF8);
    if (a >= 0) {
        char *v = NULL;
        if (H5Aread(a, vt, &v) >= 0 && v) snprintf(idx, sizeof idx, "%s", v);
        if (v) H5free_memory(v);
        H5Aclose(a);
    }
    snprintf(name, sizeof name, "obs/%s", idx);
    char **out = NULL;
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d >= 0) {
        hid_t s = H5Dget_space(d);
        hsize_t dims = 0;
        H5Sget_simple_extent_dims(s, &dims, NULL);
        out = calloc((size_t)dims + 1, sizeof(char *));
        if (H5Dread(d, vt, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) {
            free(out);
            out = NULL;
        }
        *n = (int64_t)dims;
        H5Sclose(s);
        H5Dclose(d);
    }
    H5Tclose(vt);
    H5Fclose(f);
    return out;
}

static int run_latent(const char *a, const char *b, double tol) {
    int64_t na = 0, nb = 0;
    char **oa = read_obs_names(a, &na), **ob = read_obs_names(b, &nb);
    if (!oa || !ob) {
        fprintf(stderr, "FAIL: cannot read obs names of %s or %s\n", a, b);
        return 1;
    }
    int64_t ra = 0, ca = 0, rb = 0, cb = 0;
    float *za = read_obsm(a, "X_scVI", &ra, &ca), *zb = read_obsm(b, "X_scVI", &rb, &cb);
    CHECK(za && zb, "obsm/X_scVI missing in %s or %s", a, b);
    CHECK(ra == na && rb == nb && ra == rb && ca == cb && ca > 0,
          "shapes %lldx%lld (%lld obs) vs %lldx%lld (%lld obs)", (long long)ra, (long long)ca,
          (long long)na, (long long)rb, (long long)cb, (long long)nb);
    if (failures) return 1;
    /* rows matched by obs name (quadratic: the files are small) */
    double worst = 0, zmax = 0;
    int64_t matched = 0, moved = 0;
    for (int64_t i = 0; i < ra; i++) {
        int64_t j = -1;
        if (!strcmp(oa[i], ob[i]))
            j = i;
        else
            for (int64_t k = 0; k < rb && j < 0; k++)
                if (!strcmp(oa[i], ob[k])) j = k;
        CHECK(j >= 0, "cell '%s' of %s not in %s", oa[i], a, b);
        if (j < 0) continue;
        matched++;
        moved += j != i;
        for (int64_t k = 0; k < ca; k++) {
            worst = fmax(worst, fabs((double)za[i * ca + k] - zb[j * cb + k]));
            zmax = fmax(zmax, fabs((double)za[i * ca + k]));
        }
    }
    double rel = zmax > 0 ? worst / zmax : worst;
    printf("%s vs %s: %lld cells matched by name (%lld at another row), max |z_a - z_b| = %.3g, "
           "max |z| = %.3g, rel %.2e (tol %g)\n",
           a, b, (long long)matched, (long long)moved, worst, zmax, rel, tol);
    CHECK(matched == ra, "%lld of %lld matched", (long long)matched, (long long)ra);
    CHECK(isfinite(rel) && rel <= tol, "latents differ: rel %g > %g", rel, tol);
    free(za);
    free(zb);
    for (int64_t i = 0; i < na; i++) H5free_memory(oa[i]);
    for (int64_t i = 0; i < nb; i++) H5free_memory(ob[i]);
    free(oa);
    free(ob);
    return failures ? 1 : 0;
}

/* ------------------------------------------------------------------ a bad file */

static int run_mkbad(const char *src, const char *dst) {
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    if (!in || !out) {
        fprintf(stderr, "cannot copy %s to %s\n", src, dst);
        return 1;
    }
    char buf[1 << 16];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, k, out);
    fclose(in);
    if (fclose(out)) return 1;
    hid_t f = H5Fopen(dst, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t dp = f >= 0 ? H5Dopen2(f, "X/indptr", H5P_DEFAULT) : -1;
    hid_t dd = f >= 0 ? H5Dopen2(f, "X/data", H5P_DEFAULT) : -1;
    if (dp < 0 || dd < 0) {
        fprintf(stderr, "%s: expected CSR X (X/indptr, X/data)\n", dst);
        return 1;
    }
    hid_t sp = H5Dget_space(dp);
    hsize_t np = 0;
    H5Sget_simple_extent_dims(sp, &np, NULL);
    int64_t *ip = malloc(sizeof(int64_t) * (size_t)np);
    H5Dread(dp, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, ip);
    /* the first stored value of the third cell from the end: in the last rank's shard */
    hsize_t at = (hsize_t)ip[np - 4], one = 1;
    float neg = -3.0f;
    hid_t fs = H5Dget_space(dd), ms = H5Screate_simple(1, &one, NULL);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, &at, NULL, &one, NULL);
    herr_t w = H5Dwrite(dd, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, &neg);
    printf("%s: count of cell %llu (entry %llu) set to -3\n", dst, (unsigned long long)np - 4,
           (unsigned long long)at);
    H5Sclose(ms);
    H5Sclose(fs);
    H5Sclose(sp);
    free(ip);
    H5Dclose(dp);
    H5Dclose(dd);
    H5Fclose(f);
    return w < 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "grad";
    if (!strcmp(mode, "compare") && argc == 5) return run_compare(argv[2], argv[3], atof(argv[4]));
    if (!strcmp(mode, "compare_exact") && argc == 5)
        return run_compare_exact(argv[2], argv[3], atof(argv[4]));
    if (!strcmp(mode, "latent") && argc == 5) return run_latent(argv[2], argv[3], atof(argv[4]));
    if (!strcmp(mode, "mkbad") && argc == 4) return run_mkbad(argv[2], argv[3]);
    int full = argc == 4 && !strcmp(argv[3], "full");
    if (strcmp(mode, "grad") && !(strcmp(mode, "train") == 0 && (argc == 3 || full))) {
        fprintf(
            stderr,
            "usage: test_dist_equiv grad | train OUT [full] | compare[_exact] A B TOL | latent A B "
            "TOL | mkbad SRC DST\n");
        return 2;
    }
    const char *out = argc > 2 ? argv[2] : NULL;
    dist_init(&argc, &argv);
    if (!strcmp(mode, "grad"))
        run_grad();
    else
        run_train(out, full);
    int64_t f = failures;
    dist_allreduce_i64(&f, 1);
    if (dist_rank() == 0) printf("%s: %s\n", mode, f ? "FAILED" : "ok");
    dist_finalize();
    return f ? 1 : 0;
}
