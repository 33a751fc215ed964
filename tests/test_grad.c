/* Finite-difference gradient checks of every op, and of whole scVI graphs.
 * Each check builds a small graph whose inputs are parameters, takes the scalar
 * L = sum(r * y) for a fixed random r, and compares d L / d input from the backward
 * pass with central differences (the forward runs in float32, so the tolerance is
 * set for float32 round-off). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/scvi.h"
#include "src/ops_impl.h"
#include "src/rng.h"

static int failures = 0;
static AvRngSeq rng;

static float urand(float lo, float hi) {
    return lo + (hi - lo) * (float)av_seq_uniform(&rng);
}

/* A fixed minibatch: n cells, G genes, sparse counts with zeros, two code columns. */
enum { N = 6, G = 7, NCAT = 3 };
static int64_t indptr[N + 1], cells[N];
static int32_t indices[N * G], cat[N * NCAT];
static float counts[N * G], cont[N * 2];

static AvBatch make_batch(void) {
    int64_t nz = 0;
    for (int i = 0; i < N; i++) {
        indptr[i] = nz;
        for (int j = 0; j < G; j++) {
            if ((i + 2 * j) % 3 == 0 && !(j == 0 && i % 2)) continue; /* some zeros */
            indices[nz] = j;
            counts[nz++] = (float)(1 + (i * 7 + j * 3) % 9);
        }
        cells[i] = 1000 + i;
        cat[i * NCAT + 0] = i % 3;       /* batch: 3 levels */
        cat[i * NCAT + 1] = (i / 2) % 2; /* label: 2 levels */
        cat[i * NCAT + 2] = i % 2;       /* extra covariate: 2 levels */
        cont[2 * i] = urand(-1, 1);
        cont[2 * i + 1] = urand(0, 2);
    }
    indptr[N] = nz;
    AvBatch b = {N, N, cells, indptr, indices, counts, NCAT, cat, 2, cont};
    return b;
}

static double objective(AvGraph *g, const AvBatch *b, AvTensor *y, const float *r) {
    av_graph_forward(g, b);
    double s = 0;
    int64_t n = av_rows(g, y) * y->cols;
    for (int64_t k = 0; k < n; k++) s += (double)r[k] * y->v[k];
    return s;
}

/* Compares the backward pass against central differences for every parameter. */
static void check(const char *what, AvGraph *g, const AvBatch *b, AvTensor *y, float h, float tol) {
    int64_t n = (y->batch ? b->n : y->rows) * y->cols;
    float *r = malloc(sizeof(float) * (size_t)n);
    for (int64_t k = 0; k < n; k++) r[k] = urand(-1, 1);
    objective(g, b, y, r);
    av_graph_backward_from(g, y, r);
    float *ana = malloc(sizeof(float) * (size_t)g->param_size);
    memcpy(ana, g->param_g, sizeof(float) * (size_t)g->param_size);
    /* A coordinate where the objective is not smooth at this scale (a ReLU input within
     * h of zero) gives central differences that disagree between h and h/2; such
     * coordinates are counted and skipped, and must stay rare. */
    double worst = 0;
    int64_t worst_k = -1, kinks = 0;
    for (int64_t k = 0; k < g->param_size; k++) {
        double num[2];
        for (int s = 0; s < 2; s++) {
            float keep = g->param_v[k], hs = s ? h / 2 : h;
            g->param_v[k] = keep + hs;
            double lp = objective(g, b, y, r);
            g->param_v[k] = keep - hs;
            double lm = objective(g, b, y, r);
            g->param_v[k] = keep;
            num[s] = (lp - lm) / (2.0 * hs);
        }
        double scale = fabs(num[0]) + fabs(ana[k]) + 1.0;
        if (fabs(num[0] - num[1]) / scale > 4 * tol) {
            kinks++;
            continue;
        }
        double err = fabs(num[1] - ana[k]) / scale;
        if (err > worst) worst = err, worst_k = k;
    }
    int ok = worst <= tol && kinks * 50 <= g->param_size;
    printf("%-46s %s (worst relative error %.2e at %lld, %lld values, %lld at kinks)\n", what,
           ok ? "ok" : "FAIL", worst, (long long)worst_k, (long long)g->param_size,
           (long long)kinks);
    if (!ok) failures++;
    free(r);
    free(ana);
}

static void fill(AvGraph *g, float lo, float hi) {
    for (int64_t k = 0; k < g->param_size; k++) g->param_v[k] = urand(lo, hi);
}

static void op_checks(void) {
    AvBatch b = make_batch();
    AvGraph g;
    const float h = 1e-2f, tol = 2e-3f;
    {
        av_graph_init(&g, N, 1);
        AvTensor *x1 = av_param(&g, "x1", N, 3), *x2 = av_param(&g, "x2", N, 2);
        AvTensor *w = av_param(&g, "w", G + 3 + 2 + 3 + 2, 4), *bias = av_param(&g, "b", 1, 4);
        av_graph_alloc_params(&g);
        fill(&g, -1, 1);
        int cols[2] = {0, 2}, widths[2] = {3, 2};
        AvTensor *y = av_op_linear(&g, 1, x1, x2, w, bias, 2, cols, widths);
        check("linear (sparse log1p + dense + one-hots)", &g, &b, y, h, tol);
        av_graph_free(&g);
    }
    {
        av_graph_init(&g, N, 1);
        AvTensor *x = av_param(&g, "x", N, 5), *ga = av_param(&g, "gamma", 1, 5),
                 *be = av_param(&g, "beta", 1, 5);
        av_graph_alloc_params(&g);
        AvTensor *rm = av_buffer(&g, "rm", 1, 5), *rv = av_buffer(&g, "rv", 1, 5);
        fill(&g, -1, 1);
        AvTensor *y = av_op_batchnorm(&g, x, ga, be, rm, rv);
        check("batchnorm (training statistics)", &g, &b, y, h, tol);
        g.training = 0;
        for (int j = 0; j < 5; j++) rv->v[j] = 0.5f + 0.1f * (float)j;
        check("batchnorm (running statistics)", &g, &b, y, h, tol);
        av_graph_free(&g);
    }
    struct {
        const char *name;
        int kind;
    } unary[] = {
        {"layernorm", 0}, {"relu", 1}, {"dropout p=0.3", 2}, {"exp + eps", 3}, {"softmax", 4}};
    for (int u = 0; u < 5; u++) {
        av_graph_init(&g, N, 1);
        AvTensor *x = av_param(&g, "x", N, 6);
        av_graph_alloc_params(&g);
        fill(&g, -1, 1);
        AvTensor *y = unary[u].kind == 0   ? av_op_layernorm(&g, x)
                      : unary[u].kind == 1 ? av_op_relu(&g, x)
                      : unary[u].kind == 2 ? av_op_dropout(&g, x, 0.3f)
                      : unary[u].kind == 3 ? av_op_exp_eps(&g, x, 1e-4f)
                                           : av_op_softmax(&g, x);
        /* relu has a kink at 0: keep inputs away from it */
        if (unary[u].kind == 1)
            for (int64_t k = 0; k < g.param_size; k++)
                if (fabsf(g.param_v[k]) < 0.05f) g.param_v[k] = 0.3f;
        check(unary[u].name, &g, &b, y, h, tol);
        av_graph_free(&g);
    }
    {
        av_graph_init(&g, N, 1);
        AvTensor *mu = av_param(&g, "mu", N, 4), *v = av_param(&g, "v", N, 4);
        av_graph_alloc_params(&g);
        fill(&g, 0.2f, 1.5f);
        AvTensor *y = av_op_reparam(&g, mu, v);
        check("reparameterise", &g, &b, y, 1e-3f, tol);
        av_graph_free(&g);
    }
    for (int prior = 0; prior < 2; prior++) {
        av_graph_init(&g, N, 1);
        AvTensor *mu = av_param(&g, "mu", N, 4), *v = av_param(&g, "v", N, 4);
        av_graph_alloc_params(&g);
        AvTensor *pm = av_buffer(&g, "pm", 1, 3), *pv = av_buffer(&g, "pv", 1, 3);
        for (int k = 0; k < 3; k++) pm->v[k] = 0.5f * (float)k, pv->v[k] = 0.5f + (float)k;
        fill(&g, 0.2f, 1.5f);
        AvTensor *y = prior ? av_op_kl_normal(&g, mu, v, pm, pv, 0)
                            : av_op_kl_normal(&g, mu, v, NULL, NULL, 0);
        check(prior ? "kl normal vs per-batch prior" : "kl normal vs N(0,1)", &g, &b, y, 1e-3f,
              tol);
        av_graph_free(&g);
    }
    /* scANVI's classifier terms: cross-entropy on label codes (column 1: 2 levels, all
     * in range; column 0: 3 levels against 2 logits, so code 2 is an unlabelled cell with
     * no loss), and KL(Cat(softmax) || prior) of a non-uniform prior */
    for (int col = 0; col < 2; col++) {
        av_graph_init(&g, N, 1);
        AvTensor *x = av_param(&g, "x", N, col ? 3 : 2);
        av_graph_alloc_params(&g);
        fill(&g, -2, 2);
        AvTensor *y = av_op_xent(&g, x, col == 0 ? 0 : 1);
        check(col ? "cross-entropy (all labelled)" : "cross-entropy (unlabelled skipped)", &g, &b,
              y, 1e-3f, tol);
        for (int64_t i = 0; i < N; i++)
            if (col == 0 && b.cat[i * b.n_cat] == 2 && y->v[i] != 0.0f) {
                printf("cross-entropy: unlabelled cell %lld has loss %g\n", (long long)i, y->v[i]);
                failures++;
            }
        av_graph_free(&g);
    }
    {
        av_graph_init(&g, N, 1);
        AvTensor *x = av_param(&g, "x", N, 4);
        av_graph_alloc_params(&g);
        AvTensor *prior = av_buffer(&g, "y_prior", 1, 4);
        for (int k = 0; k < 4; k++) prior->v[k] = 0.1f * (float)(k + 1);
        fill(&g, -2, 2);
        AvTensor *y = av_op_kl_categorical(&g, av_op_softmax(&g, x), prior);
        check("kl categorical (softmax vs prior)", &g, &b, y, 1e-3f, tol);
        av_graph_free(&g);
    }
    {
        av_graph_init(&g, N, 1);
        AvTensor *x = av_param(&g, "x", N, 4), *mu = av_param(&g, "mu", N, 4),
                 *v = av_param(&g, "v", N, 4);
        av_graph_alloc_params(&g);
        fill(&g, 0.3f, 1.5f);
        AvTensor *y = av_op_normal_logpdf(&g, x, mu, v);
        check("normal log-density", &g, &b, y, 1e-3f, tol);
        av_graph_free(&g);
    }
    const char *liks[] = {"zinb", "nb", "poisson"};
    const char *disps[] = {"gene", "gene-batch", "gene-label", "gene-cell"};
    for (int lik = 0; lik < 3; lik++)
        for (int d = 0; d < 4; d++) {
            if (lik == AV_LIK_POISSON && d > 0) continue;
            av_graph_init(&g, N, 1);
            AvTensor *logits = av_param(&g, "logits", N, G);
            AvTensor *lib = av_param(&g, "lib", N, 1);
            AvTensor *pxr = d == AV_DISP_GENE_CELL    ? av_param(&g, "pxr", N, G)
                            : d == AV_DISP_GENE       ? av_param(&g, "px_r", 1, G)
                            : d == AV_DISP_GENE_BATCH ? av_param(&g, "px_r", G, 3)
                                                      : av_param(&g, "px_r", G, 2);
            AvTensor *pi = av_param(&g, "pi", N, G);
            av_graph_alloc_params(&g);
            fill(&g, -1, 1);
            for (int i = 0; i < N; i++) lib->v[i] = urand(1, 3);
            AvTensor *rho = av_op_softmax(&g, logits);
            AvTensor *y = av_op_count_nll(&g, rho, lib, pxr, pi, (AvLikelihood)lik, (AvDispersion)d,
                                          d == AV_DISP_GENE_LABEL ? 1 : 0);
            char what[64];
            snprintf(what, sizeof what, "count nll %s, dispersion %s", liks[lik], disps[d]);
            check(what, &g, &b, y, 1e-2f, 5e-3f);
            av_graph_free(&g);
        }
    {
        av_graph_init(&g, N, 1);
        AvTensor *t0 = av_param(&g, "a", N, 1), *t1 = av_param(&g, "b", N, 1);
        av_graph_alloc_params(&g);
        fill(&g, -1, 1);
        AvTensor *terms[2] = {t0, t1};
        float w[2] = {1.0f, 0.3f};
        AvBatch b2 = b;
        b2.n_global = 2 * N; /* as if another rank held as many cells */
        AvTensor *y = av_op_loss(&g, 2, terms, w);
        check("weighted mean loss over the global batch", &g, &b2, y, 1e-2f, tol);
        av_graph_free(&g);
    }
}

/* The whole scVI graph for a configuration: gradient of the loss w.r.t. every weight. */
static void model_check(const char *what, void (*tweak)(AvScviConfig *)) {
    AvBatch b = make_batch();
    AvScviConfig c;
    av_scvi_defaults(&c);
    c.n_input = G;
    c.n_batch = 3;
    c.n_labels = 2;
    c.n_hidden = 5;
    c.n_latent = 3;
    c.dropout_rate = 0.2f;
    tweak(&c);
    AvScvi m;
    av_scvi_build(&m, &c, N, 7);
    if (!c.use_observed_lib_size) {
        double mean[3] = {2.0, 2.5, 3.0}, var[3] = {0.5, 1.0, 0.8};
        av_scvi_set_library_prior(&m, mean, var);
    }
    av_scvi_set_kl_weight(&m, 0.7f);
    /* running statistics drift with every forward in training mode: they only affect
     * eval mode, so the training-mode loss is a deterministic function of the weights */
    check(what, &m.g, &b, m.loss, 3e-3f, 5e-3f);
    av_scvi_free(&m);
}

static void cfg_default(AvScviConfig *c) {
    (void)c;
}
static void cfg_nb_gene_batch(AvScviConfig *c) {
    c->likelihood = AV_LIK_NB;
    c->dispersion = AV_DISP_GENE_BATCH;
}
static void cfg_poisson_ln(AvScviConfig *c) {
    c->likelihood = AV_LIK_POISSON;
    c->latent_ln = 1;
}
static void cfg_gene_cell_learned_lib(AvScviConfig *c) {
    c->dispersion = AV_DISP_GENE_CELL;
    c->use_observed_lib_size = 0;
}
static void cfg_learned_lib(AvScviConfig *c) {
    c->use_observed_lib_size = 0;
}
static void cfg_gene_cell(AvScviConfig *c) {
    c->dispersion = AV_DISP_GENE_CELL;
}
static void cfg_covariates_two_layers(AvScviConfig *c) {
    c->n_layers = 2;
    c->n_cont = 2;
    c->n_extra_cat = 1;
    c->extra_cat_sizes[0] = 2;
    c->encode_covariates = 1;
    c->dispersion = AV_DISP_GENE_LABEL;
}
static void cfg_layernorm(AvScviConfig *c) {
    c->bn_encoder = c->bn_decoder = 0;
    c->ln_encoder = c->ln_decoder = 1;
}

int main(void) {
    av_seq_init(&rng, 42, 99, 0);
    op_checks();
    model_check("scVI default (zinb, gene, batch norm)", cfg_default);
    model_check("scVI nb, gene-batch", cfg_nb_gene_batch);
    model_check("scVI poisson, ln latent", cfg_poisson_ln);
    model_check("scVI gene-cell, learned library", cfg_gene_cell_learned_lib);
    model_check("scVI learned library", cfg_learned_lib);
    model_check("scVI gene-cell", cfg_gene_cell);
    model_check("scVI 2 layers, covariates encoded, gene-label", cfg_covariates_two_layers);
    model_check("scVI layer norm", cfg_layernorm);
    printf("%d failure(s)\n", failures);
    return failures ? 1 : 0;
}
