/* The ops: constructors that append a node, the CPU kernels of the small ops and the
 * forward / backward dispatch. The linear op's kernels are in ops_linear.c, the count
 * likelihood's in ops_nll.c. Element-wise maths comes from mathx.h. */
/* FP operations may be assumed not to trap (no code here enables FP exceptions): without
 * this GCC keeps every loop scalar whose body has a conditional next to a division,
 * a floor or a possibly-sunk multiplication, `omp simd` or not. Not -ffast-math: no
 * reassociation, no finite-math assumptions, the same IEEE results. Before the includes,
 * so that mathx.h's inline functions are compiled with the same options as their callers. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/isa.h"
#include "src/mathx.h"
#include "src/ops_impl.h"
#include "src/util.h"

#define BN_EPS 1e-3f
#define BN_MOMENTUM 0.01f
#define LN_EPS 1e-5f

static int needs_grad(AvTensor *a, AvTensor *b, AvTensor *c) {
    return (a && a->g) || (b && b->g) || (c && c->g);
}

/* ---------------------------------------------------------------- constructors */

AvTensor *av_op_log_library(AvGraph *g) {
    AvNode *nd = av_node(g, AV_OP_INPUT_COUNTS_LOG_LIB);
    nd->out = av_act(g, 0, 1, 1, 0);
    return nd->out;
}

AvTensor *av_op_cont_input(AvGraph *g, int64_t n_cont) {
    AvNode *nd = av_node(g, AV_OP_INPUT_CONT);
    nd->out = av_act(g, 0, n_cont, 1, 0);
    return nd->out;
}

AvTensor *av_op_linear(AvGraph *g, int sparse_in, AvTensor *x1, AvTensor *x2, AvTensor *wt,
                       AvTensor *b, int n_cats, const int *cat_col, const int *cat_width) {
    AvNode *nd = av_node(g, AV_OP_LINEAR);
    nd->sparse_in = sparse_in;
    nd->in[0] = x1;
    nd->in[1] = x2;
    nd->in[2] = wt;
    nd->in[3] = b;
    for (int k = 0; k < n_cats; k++) {
        if (cat_width[k] <= 1) continue; /* a one-level covariate carries no columns */
        nd->cat_col[nd->n_cats] = cat_col[k];
        nd->cat_width[nd->n_cats++] = cat_width[k];
    }
    av_mark_used(wt);
    av_mark_used(b);
    nd->out = av_act(g, 0, wt->cols, 1, 1);
    return nd->out;
}

AvTensor *av_op_batchnorm(AvGraph *g, AvTensor *x, AvTensor *gamma, AvTensor *beta,
                          AvTensor *running_mean, AvTensor *running_var) {
    AvNode *nd = av_node(g, AV_OP_BATCHNORM);
    nd->in[0] = x;
    nd->in[1] = gamma;
    nd->in[2] = beta;
    nd->running_mean = running_mean->v;
    nd->running_var = running_var->v;
    av_mark_used(gamma);
    av_mark_used(beta);
    /* aux: mean, inverse std (floats); aux2: two doubles per column for reductions */
    nd->aux = av_arena_alloc(g, sizeof(float) * 2 * (size_t)x->cols);
    nd->aux2 = av_arena_alloc(g, sizeof(double) * 2 * (size_t)x->cols);
    nd->out = av_act(g, 0, x->cols, 1, 1);
    return nd->out;
}

static AvTensor *unary(AvGraph *g, AvOpKind kind, AvTensor *x, float f0) {
    AvNode *nd = av_node(g, kind);
    nd->in[0] = x;
    nd->f0 = f0;
    nd->out = av_act(g, 0, x->cols, 1, needs_grad(x, NULL, NULL));
    return nd->out;
}

AvTensor *av_op_layernorm(AvGraph *g, AvTensor *x) {
    AvTensor *y = unary(g, AV_OP_LAYERNORM, x, LN_EPS);
    g->nodes[g->n_nodes - 1].aux = av_arena_alloc(g, sizeof(float) * (size_t)g->max_batch);
    return y;
}
AvTensor *av_op_relu(AvGraph *g, AvTensor *x) {
    return unary(g, AV_OP_RELU, x, 0);
}
AvTensor *av_op_exp_eps(AvGraph *g, AvTensor *x, float eps) {
    return unary(g, AV_OP_EXP_EPS, x, eps);
}
AvTensor *av_op_softmax(AvGraph *g, AvTensor *x) {
    return unary(g, AV_OP_SOFTMAX, x, 0);
}

AvTensor *av_op_dropout(AvGraph *g, AvTensor *x, float p) {
    if (p <= 0.0f) return x;
    AvTensor *y = unary(g, AV_OP_DROPOUT, x, p);
    g->nodes[g->n_nodes - 1].aux =
        av_arena_alloc(g, sizeof(float) * (size_t)(g->max_batch * x->cols));
    return y;
}

AvTensor *av_op_reparam(AvGraph *g, AvTensor *mu, AvTensor *var) {
    AvNode *nd = av_node(g, AV_OP_REPARAM);
    nd->in[0] = mu;
    nd->in[1] = var;
    nd->aux = av_arena_alloc(g, sizeof(float) * (size_t)(g->max_batch * mu->cols));
    nd->out = av_act(g, 0, mu->cols, 1, needs_grad(mu, var, NULL));
    return nd->out;
}

float *av_noise_of(AvGraph *g, AvTensor *z) {
    for (int i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].kind == AV_OP_REPARAM && g->nodes[i].out == z) return g->nodes[i].aux;
    return NULL;
}

float *av_dropout_mask(AvGraph *g, int k) {
    for (int i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].kind == AV_OP_DROPOUT && k-- == 0) return g->nodes[i].aux;
    return NULL;
}

AvTensor *av_op_kl_normal(AvGraph *g, AvTensor *mu, AvTensor *var, AvTensor *prior_mean,
                          AvTensor *prior_var, int code_col) {
    AvNode *nd = av_node(g, AV_OP_KL_NORMAL);
    nd->in[0] = mu;
    nd->in[1] = var;
    nd->in[2] = prior_mean;
    nd->in[3] = prior_var;
    nd->code_col = code_col;
    nd->out = av_act(g, 0, 1, 1, needs_grad(mu, var, NULL));
    return nd->out;
}

AvTensor *av_op_xent(AvGraph *g, AvTensor *logits, int code_col) {
    AvNode *nd = av_node(g, AV_OP_XENT);
    nd->in[0] = logits;
    nd->code_col = code_col;
    nd->out = av_act(g, 0, 1, 1, needs_grad(logits, NULL, NULL));
    return nd->out;
}

AvTensor *av_op_kl_categorical(AvGraph *g, AvTensor *q, AvTensor *prior) {
    if (prior->rows != 1 || prior->cols != q->cols) { /* a model-building bug */
        fprintf(stderr, "atlasvi: error: kl_categorical: prior is [%lld,%lld], expected [1,%lld]\n",
                (long long)prior->rows, (long long)prior->cols, (long long)q->cols);
        abort();
    }
    AvNode *nd = av_node(g, AV_OP_KL_CATEGORICAL);
    nd->in[0] = q;
    nd->in[1] = prior;
    nd->out = av_act(g, 0, 1, 1, needs_grad(q, NULL, NULL));
    return nd->out;
}

AvTensor *av_op_normal_logpdf(AvGraph *g, AvTensor *x, AvTensor *mu, AvTensor *var) {
    AvNode *nd = av_node(g, AV_OP_NORMAL_LOGPDF);
    nd->in[0] = x;
    nd->in[1] = mu;
    nd->in[2] = var;
    nd->out = av_act(g, 0, 1, 1, needs_grad(x, mu, var));
    return nd->out;
}

AvTensor *av_op_count_nll(AvGraph *g, AvTensor *rho, AvTensor *log_lib, AvTensor *px_r,
                          AvTensor *pi, AvLikelihood lik, AvDispersion disp, int code_col) {
    AvNode *nd = av_node(g, AV_OP_COUNT_NLL);
    nd->in[0] = rho;
    nd->in[1] = log_lib;
    nd->in[2] = lik == AV_LIK_POISSON ? NULL : px_r;
    nd->in[3] = lik == AV_LIK_ZINB ? pi : NULL;
    nd->lik = lik;
    nd->disp = disp;
    nd->code_col = code_col;
    if (nd->in[2] && disp != AV_DISP_GENE_CELL) av_mark_used(px_r);
    int64_t G = rho->cols, cells = g->max_batch * G;
    /* saved per element: d ll / d mu, theta * d ll / d theta, d ll / d pi */
    nd->aux = av_arena_alloc(g, sizeof(float) * 3 * (size_t)cells);
    /* lgamma and digamma of per-gene thetas, computed once per step */
    int64_t nt = (nd->in[2] && disp != AV_DISP_GENE_CELL) ? px_r->rows * px_r->cols : 0;
    nd->aux2 = av_arena_alloc(g, sizeof(float) * 5 * (size_t)(nt ? nt : 1));
    nd->out = av_act(g, 0, 1, 1, 1);
    return nd->out;
}

/* A model that asks for too many terms is a programming error: stop with a message
 * rather than write past the weights and the per-step sums. */
_Static_assert(AV_MAX_LOSS_TERMS <= 32, "a loss term's assign flag is a bit of AvNode.assign");

static void check_loss_term(int term, const char *what) {
    if (term >= 0 && term < AV_MAX_LOSS_TERMS) return;
    fprintf(stderr, "atlasvi: error: %s: loss term %d outside 0..%d (AV_MAX_LOSS_TERMS)\n", what,
            term, AV_MAX_LOSS_TERMS - 1);
    abort();
}

AvTensor *av_op_loss(AvGraph *g, int n_terms, AvTensor **terms, const float *w) {
    if (n_terms > 0) check_loss_term(n_terms - 1, "av_op_loss");
    AvNode *nd = av_node(g, AV_OP_LOSS);
    nd->n_terms = n_terms;
    nd->terms = av_arena_alloc(g, sizeof(AvTensor *) * (size_t)(n_terms > 0 ? n_terms : 1));
    for (int t = 0; t < n_terms; t++) {
        nd->terms[t] = terms[t];
        nd->w[t] = w[t];
    }
    nd->out = av_act(g, 1, 1, 0, 1);
    g->loss = nd->out;
    return nd->out;
}

void av_loss_set_weight(AvGraph *g, int term, float w) {
    check_loss_term(term, "av_loss_set_weight");
    for (int i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].kind == AV_OP_LOSS) g->nodes[i].w[term] = w;
}

/* ---------------------------------------------------------------- kernels */

float av_lgamma_factorial_table[AV_LGF_TABLE];

void av_lgamma_table_init(void) {
    for (int k = 0; k < AV_LGF_TABLE; k++) av_lgamma_factorial_table[k] = (float)lgamma(k + 1.0);
}

/* Per-column sums of x and x^2 over n rows of c, in double (s[0..c), s[c..2c)). */
AV_ISA_BODY void column_moments_body(const float *restrict x, int64_t n, int64_t c,
                                     double *restrict s) {
    memset(s, 0, sizeof(double) * 2 * (size_t)c);
    for (int64_t i = 0; i < n; i++)
#pragma omp simd
        for (int64_t j = 0; j < c; j++) {
            double v = x[i * c + j];
            s[j] += v;
            s[c + j] += v * v;
        }
}
AV_DISPATCH_VOID(column_moments,
                 (const float *restrict x, int64_t n, int64_t c, double *restrict s), (x, n, c, s))

/* Per-column sums of dy and dy * xhat (xhat = (x - mean) istd) over n rows of c. */
AV_ISA_BODY void column_grad_moments_body(const float *restrict x, const float *restrict dy,
                                          const float *restrict mean, const float *restrict istd,
                                          int64_t n, int64_t c, double *restrict s) {
    memset(s, 0, sizeof(double) * 2 * (size_t)c);
    for (int64_t i = 0; i < n; i++)
#pragma omp simd
        for (int64_t j = 0; j < c; j++) {
            double d = dy[i * c + j], xh = (x[i * c + j] - mean[j]) * istd[j];
            s[j] += d;
            s[c + j] += d * xh;
        }
}
AV_DISPATCH_VOID(column_grad_moments,
                 (const float *restrict x, const float *restrict dy, const float *restrict mean,
                  const float *restrict istd, int64_t n, int64_t c, double *restrict s),
                 (x, dy, mean, istd, n, c, s))

static void batchnorm_forward(AvGraph *g, AvNode *nd) {
    AvTensor *x = nd->in[0], *gamma = nd->in[1], *beta = nd->in[2], *y = nd->out;
    int64_t n = g->n, c = x->cols;
    float *mean = nd->aux, *istd = nd->aux + c;
    if (g->training) {
        double *s = (double *)nd->aux2;
        column_moments(x->v, n, c, s);
        if (g->reduce) g->reduce(s, 2 * c);
        double ng = (double)g->batch->n_global;
        for (int64_t j = 0; j < c; j++) {
            double m = s[j] / ng, var = s[c + j] / ng - m * m;
            if (var < 0) var = 0;
            mean[j] = (float)m;
            istd[j] = (float)(1.0 / sqrt(var + BN_EPS));
            nd->running_mean[j] = (1 - BN_MOMENTUM) * nd->running_mean[j] + BN_MOMENTUM * (float)m;
            double unbiased = ng > 1 ? var * ng / (ng - 1) : var;
            nd->running_var[j] =
                (1 - BN_MOMENTUM) * nd->running_var[j] + BN_MOMENTUM * (float)unbiased;
        }
    } else {
        for (int64_t j = 0; j < c; j++) {
            mean[j] = nd->running_mean[j];
            istd[j] = 1.0f / sqrtf(nd->running_var[j] + BN_EPS);
        }
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < c; j++)
            y->v[i * c + j] = gamma->v[j] * (x->v[i * c + j] - mean[j]) * istd[j] + beta->v[j];
}

static void batchnorm_backward(AvGraph *g, AvNode *nd) {
    AvTensor *x = nd->in[0], *gamma = nd->in[1], *beta = nd->in[2], *y = nd->out;
    int64_t n = g->n, c = x->cols;
    const float *mean = nd->aux, *istd = nd->aux + c;
    double *s = (double *)nd->aux2; /* sum dy, sum dy * xhat */
    column_grad_moments(x->v, y->g, mean, istd, n, c, s);
    float kb = av_assigns(nd, 2) ? 0.0f : 1.0f, kg = av_assigns(nd, 1) ? 0.0f : 1.0f;
    for (int64_t j = 0; j < c; j++) {
        beta->g[j] = kb * beta->g[j] + (float)s[j];
        gamma->g[j] = kg * gamma->g[j] + (float)s[c + j];
    }
    if (!x->g) return;
    int assign = av_assigns(nd, 0);
    if (!g->training) {
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < c; j++) {
                float d = y->g[i * c + j] * gamma->v[j] * istd[j];
                x->g[i * c + j] = assign ? d : x->g[i * c + j] + d;
            }
        return;
    }
    if (g->reduce) g->reduce(s, 2 * c); /* the statistics are global, so are their gradients */
    double ng = (double)g->batch->n_global;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < c; j++) {
            double xh = (x->v[i * c + j] - mean[j]) * istd[j];
            double d = (ng * y->g[i * c + j] - s[j] - xh * s[c + j]) * gamma->v[j] * istd[j] / ng;
            x->g[i * c + j] = assign ? (float)d : x->g[i * c + j] + (float)d;
        }
}

static void layernorm_forward(AvGraph *g, AvNode *nd) {
    AvTensor *x = nd->in[0], *y = nd->out;
    int64_t n = g->n, c = x->cols;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const float *xi = x->v + i * c;
        double m = 0, v = 0;
        for (int64_t j = 0; j < c; j++) m += xi[j];
        m /= (double)c;
        for (int64_t j = 0; j < c; j++) v += (xi[j] - m) * (xi[j] - m);
        float is = (float)(1.0 / sqrt(v / (double)c + nd->f0));
        nd->aux[i] = is;
        for (int64_t j = 0; j < c; j++) y->v[i * c + j] = (float)(xi[j] - m) * is;
    }
}

static void layernorm_backward(AvGraph *g, AvNode *nd) {
    AvTensor *x = nd->in[0], *y = nd->out;
    int64_t n = g->n, c = x->cols;
    int assign = av_assigns(nd, 0);
    if (!x->g) return;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const float *gy = y->g + i * c, *yh = y->v + i * c;
        double sg = 0, sgy = 0;
        for (int64_t j = 0; j < c; j++) {
            sg += gy[j];
            sgy += gy[j] * yh[j];
        }
        sg /= (double)c;
        sgy /= (double)c;
        for (int64_t j = 0; j < c; j++) {
            float d = nd->aux[i] * (float)(gy[j] - sg - yh[j] * sgy);
            x->g[i * c + j] = assign ? d : x->g[i * c + j] + d;
        }
    }
}

/* Four draws of node nd for (cell, step, columns j..j+3). The counter is (cell low, cell
 * high ^ node id / 256 << 16, step, stream << 20 | j / 4): distinct for every node below
 * 2^24, cell below 2^48 and column below 2^22; for nodes below 256 (all of scVI's) the
 * same keys as before node ids reached word 1. */
static inline AvRng4 node_draw(const AvGraph *g, const AvNode *nd, uint64_t cell, int64_t j) {
    return av_philox(g->seed, (uint32_t)cell, (uint32_t)(cell >> 32) ^ nd->stream_hi,
                     (uint32_t)g->step, ((uint32_t)nd->stream << 20) | (uint32_t)(j >> 2));
}

/* Standard normals for (cell, step, node): four per Philox call. */
static void fill_normal(AvGraph *g, const AvNode *nd, float *dst, int64_t cols) {
    const AvBatch *bt = g->batch;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < g->n; i++) {
        uint64_t cell = (uint64_t)bt->cell[i];
        for (int64_t j = 0; j < cols; j += 4) {
            AvRng4 r = node_draw(g, nd, cell, j);
            float z[4];
            av_normal2(r, &z[0], &z[1], &z[2], &z[3]);
            for (int64_t q = 0; q < 4 && j + q < cols; q++) dst[i * cols + j + q] = z[q];
        }
    }
}

static void dropout_forward(AvGraph *g, AvNode *nd) {
    AvTensor *x = nd->in[0], *y = nd->out;
    int64_t n = g->n, c = x->cols;
    if (!g->training) {
        memcpy(y->v, x->v, sizeof(float) * (size_t)(n * c));
        return;
    }
    float keep = 1.0f / (1.0f - nd->f0);
    const AvBatch *bt = g->batch;
    if (!g->fill_noise) { /* tests supply the mask (0 or 1/(1-p)) themselves */
        for (int64_t k = 0; k < n * c; k++) y->v[k] = x->v[k] * nd->aux[k];
        return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        uint64_t cell = (uint64_t)bt->cell[i];
        for (int64_t j = 0; j < c; j += 4) {
            AvRng4 r = node_draw(g, nd, cell, j);
            for (int64_t q = 0; q < 4 && j + q < c; q++) {
                float m = av_u01(r.v[q]) < nd->f0 ? 0.0f : keep;
                nd->aux[i * c + j + q] = m;
                y->v[i * c + j + q] = x->v[i * c + j + q] * m;
            }
        }
    }
}

/* Row softmax with the vectorized exp; the sums run in float lanes (a row of a few
 * thousand terms in [0, 1]: relative error ~1e-7, far inside the tests' tolerances). */
AV_ISA_BODY void softmax_row_body(const float *restrict x, float *restrict y, int64_t c) {
    float mx = x[0], s = 0;
#pragma omp simd reduction(max : mx)
    for (int64_t j = 0; j < c; j++) mx = x[j] > mx ? x[j] : mx;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < c; j++) {
        float e = av_expf(x[j] - mx);
        y[j] = e;
        s += e;
    }
    float inv = 1.0f / s;
#pragma omp simd
    for (int64_t j = 0; j < c; j++) y[j] *= inv;
}
AV_DISPATCH_VOID(softmax_row, (const float *restrict x, float *restrict y, int64_t c), (x, y, c))

AV_ISA_BODY void softmax_row_backward_body(const float *restrict y, const float *restrict gy,
                                           float *restrict gx, int64_t c, int assign) {
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < c; j++) s += y[j] * gy[j];
    if (assign) {
#pragma omp simd
        for (int64_t j = 0; j < c; j++) gx[j] = y[j] * (gy[j] - s);
    } else {
#pragma omp simd
        for (int64_t j = 0; j < c; j++) gx[j] += y[j] * (gy[j] - s);
    }
}
AV_DISPATCH_VOID(softmax_row_backward,
                 (const float *restrict y, const float *restrict gy, float *restrict gx, int64_t c,
                  int assign),
                 (y, gy, gx, c, assign))

static void node_forward_elementwise(AvGraph *g, AvNode *nd) {
    AvTensor *x = nd->in[0], *y = nd->out;
    int64_t n = g->n, c = y->cols;
    switch (nd->kind) {
    case AV_OP_RELU:
        for (int64_t k = 0; k < n * c; k++) y->v[k] = x->v[k] > 0 ? x->v[k] : 0;
        break;
    case AV_OP_EXP_EPS:
        for (int64_t k = 0; k < n * c; k++) y->v[k] = expf(x->v[k]) + nd->f0;
        break;
    case AV_OP_SOFTMAX:
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) softmax_row(x->v + i * c, y->v + i * c, c);
        break;
    case AV_OP_REPARAM: {
        AvTensor *mu = nd->in[0], *var = nd->in[1];
        if (g->fill_noise) fill_normal(g, nd, nd->aux, c);
        for (int64_t k = 0; k < n * c; k++) y->v[k] = mu->v[k] + sqrtf(var->v[k]) * nd->aux[k];
        break;
    }
    default:
        break;
    }
}

/* gx = d (assign) or gx += d, over a batch tensor's n x c elements */
#define GRAD_LOOP(assign, gx, count, d)                                                            \
    do {                                                                                           \
        if (assign) {                                                                              \
            for (int64_t k = 0; k < (count); k++) (gx)[k] = (d);                                   \
        } else {                                                                                   \
            for (int64_t k = 0; k < (count); k++) (gx)[k] += (d);                                  \
        }                                                                                          \
    } while (0)

/* ReLU's gradient as a select, so that it vectorizes (a branch per element kept it scalar:
 * ~8 ns per element). */
AV_ISA_BODY void relu_backward_body(const float *restrict x, const float *restrict gy,
                                    float *restrict gx, int64_t count, int assign) {
    if (assign) {
#pragma omp simd
        for (int64_t k = 0; k < count; k++) gx[k] = x[k] > 0.0f ? gy[k] : 0.0f;
    } else {
#pragma omp simd
        for (int64_t k = 0; k < count; k++) gx[k] += x[k] > 0.0f ? gy[k] : 0.0f;
    }
}
AV_DISPATCH_VOID(relu_backward,
                 (const float *restrict x, const float *restrict gy, float *restrict gx,
                  int64_t count, int assign),
                 (x, gy, gx, count, assign))

static void node_backward_elementwise(AvGraph *g, AvNode *nd) {
    AvTensor *x = nd->in[0], *y = nd->out;
    int64_t n = g->n, c = y->cols;
    int a0 = av_assigns(nd, 0);
    switch (nd->kind) {
    case AV_OP_RELU:
        if (x->g) relu_backward(x->v, y->g, x->g, n * c, a0);
        break;
    case AV_OP_EXP_EPS:
        if (x->g) GRAD_LOOP(a0, x->g, n * c, y->g[k] * (y->v[k] - nd->f0));
        break;
    case AV_OP_DROPOUT:
        if (x->g) {
            if (g->training)
                GRAD_LOOP(a0, x->g, n * c, y->g[k] * nd->aux[k]);
            else
                GRAD_LOOP(a0, x->g, n * c, y->g[k]);
        }
        break;
    case AV_OP_SOFTMAX:
        if (!x->g) break;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++)
            softmax_row_backward(y->v + i * c, y->g + i * c, x->g + i * c, c, a0);
        break;
    case AV_OP_REPARAM: {
        AvTensor *mu = nd->in[0], *var = nd->in[1];
        if (mu->g) GRAD_LOOP(a0, mu->g, n * c, y->g[k]);
        if (var->g)
            GRAD_LOOP(av_assigns(nd, 1), var->g, n * c,
                      y->g[k] * nd->aux[k] * 0.5f / sqrtf(var->v[k]));
        break;
    }
    default:
        break;
    }
}

static void kl_forward(AvGraph *g, AvNode *nd, int backward) {
    AvTensor *mu = nd->in[0], *var = nd->in[1], *pm = nd->in[2], *pv = nd->in[3], *y = nd->out;
    int64_t n = g->n, c = mu->cols;
    const AvBatch *bt = g->batch;
    for (int64_t i = 0; i < n; i++) {
        float m = 0, v = 1;
        if (pm) {
            int32_t code = bt->cat[i * bt->n_cat + nd->code_col];
            m = pm->v[code];
            v = pv->v[code];
        }
        double s = 0;
        for (int64_t j = 0; j < c; j++) {
            float dmu, dv;
            s += av_kl_normal(mu->v[i * c + j], var->v[i * c + j], m, v, &dmu, &dv);
            if (backward) {
                float go = y->g[i];
                int64_t e = i * c + j;
                if (mu->g) mu->g[e] = (av_assigns(nd, 0) ? 0.0f : mu->g[e]) + go * dmu;
                if (var->g) var->g[e] = (av_assigns(nd, 1) ? 0.0f : var->g[e]) + go * dv;
            }
        }
        if (!backward) y->v[i] = (float)s;
    }
}

/* Cross-entropy of one row: logsumexp(x) - x[y] in double; with backward, the
 * gradient softmax(x) - onehot(y) scaled by go. */
static void xent_forward(AvGraph *g, AvNode *nd, int backward) {
    AvTensor *x = nd->in[0], *y = nd->out;
    int64_t c = x->cols;
    const AvBatch *bt = g->batch;
    int assign = av_assigns(nd, 0);
    for (int64_t i = 0; i < g->n; i++) {
        const float *xi = x->v + i * c;
        int32_t code = bt->cat[i * bt->n_cat + nd->code_col];
        int labelled = code >= 0 && code < c;
        double mx = xi[0], se = 0;
        for (int64_t j = 1; j < c; j++) mx = xi[j] > mx ? xi[j] : mx;
        for (int64_t j = 0; j < c; j++) se += exp(xi[j] - mx);
        if (!backward) {
            y->v[i] = labelled ? (float)(mx + log(se) - xi[code]) : 0.0f;
            continue;
        }
        if (!x->g) continue;
        float go = labelled ? y->g[i] : 0.0f;
        for (int64_t j = 0; j < c; j++) {
            float d = go * (float)(exp(xi[j] - mx) / se - (j == code ? 1.0 : 0.0));
            x->g[i * c + j] = (assign ? 0.0f : x->g[i * c + j]) + d;
        }
    }
}

/* torch's probs_to_logits clamp */
static double clamped_log(double p) {
    const double eps = FLT_EPSILON;
    return log(p < eps ? eps : p > 1.0 - eps ? 1.0 - eps : p);
}

/* sum_k q_k (log c(q_k) - log c(p_k)) with q normalised by its sum S. The gradient of
 * the normalised q_k is log c(q_k) - log c(p_k) + [q_k inside the clamp]; back through
 * q_k / S it becomes (d_k - sum_j qn_j d_j) / S. */
static void kl_categorical_forward(AvGraph *g, AvNode *nd, int backward) {
    AvTensor *q = nd->in[0], *p = nd->in[1], *y = nd->out;
    int64_t c = q->cols;
    int assign = av_assigns(nd, 0);
    const double eps = FLT_EPSILON;
    for (int64_t i = 0; i < g->n; i++) {
        const float *qi = q->v + i * c;
        double sq = 0, kl = 0, dot = 0;
        for (int64_t j = 0; j < c; j++) sq += qi[j];
        for (int64_t j = 0; j < c; j++) {
            double qn = qi[j] / sq;
            double t = clamped_log(qn) - clamped_log(p->v[j]);
            kl += qn * t;
            dot += qn * (t + (qn > eps && qn < 1.0 - eps ? 1.0 : 0.0));
        }
        if (!backward) {
            y->v[i] = (float)kl;
            continue;
        }
        if (!q->g) continue;
        for (int64_t j = 0; j < c; j++) {
            double qn = qi[j] / sq;
            double d =
                clamped_log(qn) - clamped_log(p->v[j]) + (qn > eps && qn < 1.0 - eps ? 1.0 : 0.0);
            float gd = y->g[i] * (float)((d - dot) / sq);
            q->g[i * c + j] = (assign ? 0.0f : q->g[i * c + j]) + gd;
        }
    }
}

/* log N(x; mu, sqrt(v)) = -(log 2 pi + log v)/2 - (x - mu)^2 / (2 v), summed per row in
 * double; d/dx = -(x - mu)/v = -d/dmu, d/dv = ((x - mu)^2 / v - 1) / (2 v). */
static void normal_logpdf_forward(AvGraph *g, AvNode *nd, int backward) {
    AvTensor *x = nd->in[0], *mu = nd->in[1], *var = nd->in[2], *y = nd->out;
    int64_t c = x->cols;
    const double log_2pi = 1.8378770664093453;
    int ax = av_assigns(nd, 0), am = av_assigns(nd, 1), av = av_assigns(nd, 2);
    for (int64_t i = 0; i < g->n; i++) {
        double s = 0;
        for (int64_t j = 0; j < c; j++) {
            int64_t e = i * c + j;
            double d = (double)x->v[e] - mu->v[e], v = var->v[e];
            if (!backward) {
                s += -0.5 * (log_2pi + log(v)) - d * d / (2.0 * v);
                continue;
            }
            float go = y->g[i];
            float gx = go * (float)(-d / v), gv = go * (float)((d * d / v - 1.0) / (2.0 * v));
            if (x->g) x->g[e] = (ax ? 0.0f : x->g[e]) + gx;
            if (mu->g) mu->g[e] = (am ? 0.0f : mu->g[e]) - gx;
            if (var->g) var->g[e] = (av ? 0.0f : var->g[e]) + gv;
        }
        if (!backward) y->v[i] = (float)s;
    }
}

static void loss_forward(AvGraph *g, AvNode *nd, int backward) {
    double ng = (double)g->batch->n_global, total = 0;
    for (int t = 0; t < nd->n_terms; t++) {
        AvTensor *x = nd->terms[t];
        double s = 0;
        for (int64_t i = 0; i < g->n; i++) {
            if (backward) {
                float d = nd->out->g[0] * (float)(nd->w[t] / ng);
                if (x->g) x->g[i] = (av_assigns(nd, t) ? 0.0f : x->g[i]) + d;
            } else {
                s += x->v[i];
            }
        }
        if (!backward) {
            g->loss_terms[t] = s;
            total += nd->w[t] * s;
        }
    }
    if (!backward) nd->out->v[0] = (float)(total / ng);
}

/* A cell's total count in double lanes (one add chain per lane, not one for the row). */
AV_ISA_BODY double row_sum_body(const AvBatch *bt, int64_t i) {
    double s = 0;
    const float *c = bt->counts;
#pragma omp simd reduction(+ : s)
    for (int64_t k = bt->indptr[i]; k < bt->indptr[i + 1]; k++) s += c[k];
    return s;
}
AV_DISPATCH(double, row_sum, (const AvBatch *bt, int64_t i), (bt, i))

static void input_forward(AvGraph *g, AvNode *nd) {
    const AvBatch *bt = g->batch;
    AvTensor *y = nd->out;
    if (nd->kind == AV_OP_INPUT_COUNTS_LOG_LIB) {
        for (int64_t i = 0; i < g->n; i++) y->v[i] = (float)log(row_sum(bt, i));
    } else {
        memcpy(y->v, bt->cont, sizeof(float) * (size_t)(g->n * y->cols));
    }
}

int av_node_assigns(const AvNode *nd, int s) {
    switch (nd->kind) {
    case AV_OP_LINEAR: /* the weight only when dense blocks (GEMMs) cover all its rows */
        return s != 2 || (!nd->sparse_in && nd->n_cats == 0);
    case AV_OP_BATCHNORM:
    case AV_OP_LOSS:
        return 1;
    case AV_OP_REPARAM:
    case AV_OP_KL_NORMAL: /* mean and variance; no gradient for the prior */
        return s < 2;
    case AV_OP_XENT:
    case AV_OP_KL_CATEGORICAL: /* the input's rows; no gradient for the prior */
        return s == 0;
    case AV_OP_NORMAL_LOGPDF: /* x, mean and variance, element by element */
        return s < 3;
    case AV_OP_COUNT_NLL: /* rho, log library, pi: per-cell rows written whole */
        return s != 2;
    case AV_OP_LAYERNORM:
    case AV_OP_RELU:
    case AV_OP_DROPOUT:
    case AV_OP_EXP_EPS:
    case AV_OP_SOFTMAX:
        return s == 0;
    default:
        return 0;
    }
}

void av_node_forward(AvGraph *g, AvNode *nd) {
    switch (nd->kind) {
    case AV_OP_LINEAR:
        av_linear_forward(g, nd);
        break;
    case AV_OP_BATCHNORM:
        batchnorm_forward(g, nd);
        break;
    case AV_OP_LAYERNORM:
        layernorm_forward(g, nd);
        break;
    case AV_OP_DROPOUT:
        dropout_forward(g, nd);
        break;
    case AV_OP_KL_NORMAL:
        kl_forward(g, nd, 0);
        break;
    case AV_OP_COUNT_NLL:
        av_count_nll_forward(g, nd);
        break;
    case AV_OP_XENT:
        xent_forward(g, nd, 0);
        break;
    case AV_OP_KL_CATEGORICAL:
        kl_categorical_forward(g, nd, 0);
        break;
    case AV_OP_NORMAL_LOGPDF:
        normal_logpdf_forward(g, nd, 0);
        break;
    case AV_OP_LOSS:
        loss_forward(g, nd, 0);
        break;
    case AV_OP_INPUT_COUNTS_LOG_LIB:
    case AV_OP_INPUT_CONT:
        input_forward(g, nd);
        break;
    default:
        node_forward_elementwise(g, nd);
        break;
    }
}

void av_node_backward(AvGraph *g, AvNode *nd) {
    if (!nd->out->g) return;
    switch (nd->kind) {
    case AV_OP_LINEAR:
        av_linear_backward(g, nd);
        break;
    case AV_OP_BATCHNORM:
        batchnorm_backward(g, nd);
        break;
    case AV_OP_LAYERNORM:
        layernorm_backward(g, nd);
        break;
    case AV_OP_KL_NORMAL:
        kl_forward(g, nd, 1);
        break;
    case AV_OP_COUNT_NLL:
        av_count_nll_backward(g, nd);
        break;
    case AV_OP_XENT:
        xent_forward(g, nd, 1);
        break;
    case AV_OP_KL_CATEGORICAL:
        kl_categorical_forward(g, nd, 1);
        break;
    case AV_OP_NORMAL_LOGPDF:
        normal_logpdf_forward(g, nd, 1);
        break;
    case AV_OP_LOSS:
        loss_forward(g, nd, 1);
        break;
    case AV_OP_INPUT_COUNTS_LOG_LIB:
    case AV_OP_INPUT_CONT:
        break;
    default:
        node_backward_elementwise(g, nd);
        break;
    }
}
