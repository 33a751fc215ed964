/* The ops: constructors that append a node, and the CPU kernels of each node's forward
 * and backward. Element-wise maths comes from mathx.h; GEMMs go to OpenBLAS. */
/* FP operations may be assumed not to trap (no code here enables FP exceptions): without
 * this GCC keeps every loop scalar whose body has a conditional next to a division,
 * a floor or a possibly-sunk multiplication, `omp simd` or not. Not -ffast-math: no
 * reassociation, no finite-math assumptions, the same IEEE results. Before the includes,
 * so that mathx.h's inline functions are compiled with the same options as their callers. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

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

AvTensor *av_op_loss(AvGraph *g, int n_terms, AvTensor **terms, const float *w) {
    AvNode *nd = av_node(g, AV_OP_LOSS);
    for (int t = 0; t < n_terms; t++) {
        nd->in[t] = terms[t];
        nd->w[t] = w[t];
    }
    nd->code_col = n_terms;
    nd->out = av_act(g, 1, 1, 0, 1);
    g->loss = nd->out;
    return nd->out;
}

void av_loss_set_weight(AvGraph *g, int term, float w) {
    for (int i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].kind == AV_OP_LOSS) g->nodes[i].w[term] = w;
}

/* ---------------------------------------------------------------- kernels */

float av_lgamma_factorial_table[AV_LGF_TABLE];

void av_lgamma_table_init(void) {
    for (int k = 0; k < AV_LGF_TABLE; k++) av_lgamma_factorial_table[k] = (float)lgamma(k + 1.0);
}

/* C = op(A) op(B) (+ beta C), row-major. OpenBLAS runs single-threaded (main.c); the
 * threads here split C into row blocks, or column blocks when C has few rows, so GEMMs
 * and the element-wise kernels share one OpenMP team instead of fighting two pools. */
static void sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
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
                ap += ta ? lo : lo * lda; /* rows of op(A) */
                cp += lo * ldc;
                mm = hi - lo;
            } else {
                bp += tb ? lo * ldb : lo; /* columns of op(B) */
                cp += lo;
                nn = hi - lo;
            }
            cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                        tb ? CblasTrans : CblasNoTrans, (int)mm, (int)nn, (int)k, 1.0f, ap,
                        (int)lda, bp, (int)ldb, beta, cp, (int)ldc);
        }
    }
}

/* The sparse first layer: values are log1p(counts) (mode 1) or the counts, taken a block
 * of non-zeros at a time into a stack array (vectorized log1p), then four weight rows per
 * pass over the output row. */
#define SPARSE_BLOCK 256
static inline int64_t sparse_values(int mode, const float *cnt, int64_t nnz, float *v) {
    int64_t n = nnz < SPARSE_BLOCK ? nnz : SPARSE_BLOCK;
    if (mode == 1) {
#pragma omp simd
        for (int64_t q = 0; q < n; q++) v[q] = av_log1pf_unit(cnt[q]);
    } else {
        for (int64_t q = 0; q < n; q++) v[q] = cnt[q];
    }
    return n;
}

/* y_i += sum_k v_k W[idx_k, :] */
AV_CLONES static void sparse_row_forward(int mode, const int32_t *idx, const float *cnt,
                                         int64_t nnz, const float *wt, int64_t out,
                                         float *restrict yi) {
    float v[SPARSE_BLOCK];
    for (int64_t k0 = 0; k0 < nnz; k0 += SPARSE_BLOCK) {
        int64_t n = sparse_values(mode, cnt + k0, nnz - k0, v), q = 0;
        for (; q + 4 <= n; q += 4) {
            const float *w0 = wt + (int64_t)idx[k0 + q] * out,
                        *w1 = wt + (int64_t)idx[k0 + q + 1] * out;
            const float *w2 = wt + (int64_t)idx[k0 + q + 2] * out,
                        *w3 = wt + (int64_t)idx[k0 + q + 3] * out;
            float v0 = v[q], v1 = v[q + 1], v2 = v[q + 2], v3 = v[q + 3];
#pragma omp simd
            for (int64_t o = 0; o < out; o++)
                yi[o] += (v0 * w0[o] + v1 * w1[o]) + (v2 * w2[o] + v3 * w3[o]);
        }
        for (; q < n; q++) {
            const float *w = wt + (int64_t)idx[k0 + q] * out;
            float vq = v[q];
#pragma omp simd
            for (int64_t o = 0; o < out; o++) yi[o] += vq * w[o];
        }
    }
}

/* dW[idx_k, o0:o1] += v_k dy_i[o0:o1] */
AV_CLONES static void sparse_row_backward(int mode, const int32_t *idx, const float *cnt,
                                          int64_t nnz, const float *restrict gi, float *gw,
                                          int64_t out, int64_t o0, int64_t o1) {
    float v[SPARSE_BLOCK];
    for (int64_t k0 = 0; k0 < nnz; k0 += SPARSE_BLOCK) {
        int64_t n = sparse_values(mode, cnt + k0, nnz - k0, v);
        for (int64_t q = 0; q < n; q++) {
            float *restrict g = gw + (int64_t)idx[k0 + q] * out;
            float vq = v[q];
#pragma omp simd
            for (int64_t o = o0; o < o1; o++) g[o] += vq * gi[o];
        }
    }
}

/* Row offsets of each input block inside the [in, out] weight. */
static int64_t linear_sparse_rows(const AvNode *nd) {
    int64_t r = nd->in[2]->rows;
    if (nd->in[0]) r -= nd->in[0]->cols;
    if (nd->in[1]) r -= nd->in[1]->cols;
    for (int k = 0; k < nd->n_cats; k++) r -= nd->cat_width[k];
    return nd->sparse_in ? r : 0;
}

static void linear_forward(AvGraph *g, AvNode *nd) {
    const AvBatch *bt = g->batch;
    AvTensor *wt = nd->in[2], *b = nd->in[3], *y = nd->out;
    int64_t n = g->n, out = wt->cols, row = linear_sparse_rows(nd);
    for (int64_t i = 0; i < n; i++) {
        if (b)
            memcpy(y->v + i * out, b->v, sizeof(float) * (size_t)out);
        else
            memset(y->v + i * out, 0, sizeof(float) * (size_t)out);
    }
    if (nd->sparse_in) {
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) {
            int64_t k0 = bt->indptr[i];
            sparse_row_forward(nd->sparse_in, bt->indices + k0, bt->counts + k0,
                               bt->indptr[i + 1] - k0, wt->v, out, y->v + i * out);
        }
    }
    for (int s = 0; s < 2; s++) {
        AvTensor *x = nd->in[s];
        if (!x) continue;
        sgemm(0, 0, n, out, x->cols, x->v, x->cols, wt->v + row * out, out, 1.0f, y->v, out);
        row += x->cols;
    }
    for (int k = 0; k < nd->n_cats; k++) {
        for (int64_t i = 0; i < n; i++) {
            int32_t code = bt->cat[i * bt->n_cat + nd->cat_col[k]];
            const float *w = wt->v + (row + code) * out;
            float *yi = y->v + i * out;
            for (int64_t o = 0; o < out; o++) yi[o] += w[o];
        }
        row += nd->cat_width[k];
    }
}

static void linear_backward(AvGraph *g, AvNode *nd) {
    const AvBatch *bt = g->batch;
    AvTensor *wt = nd->in[2], *b = nd->in[3], *y = nd->out;
    int64_t n = g->n, out = wt->cols, row = linear_sparse_rows(nd);
    const float *gy = y->g;
    if (b)
        for (int64_t i = 0; i < n; i++)
            for (int64_t o = 0; o < out; o++) b->g[o] += gy[i * out + o];
    if (nd->sparse_in) {
        /* threads own disjoint slices of output columns, so scatters never collide */
#pragma omp parallel
        {
            int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
            int64_t o0 = out * t / nt, o1 = out * (t + 1) / nt;
            if (nt > 1) o0 &= ~(int64_t)15, o1 = t == nt - 1 ? out : o1 & ~(int64_t)15;
            for (int64_t i = 0; i < n; i++) {
                int64_t k0 = bt->indptr[i];
                sparse_row_backward(nd->sparse_in, bt->indices + k0, bt->counts + k0,
                                    bt->indptr[i + 1] - k0, gy + i * out, wt->g, out, o0, o1);
            }
        }
    }
    for (int s = 0; s < 2; s++) {
        AvTensor *x = nd->in[s];
        if (!x) continue;
        const float *w = wt->v + row * out;
        if (x->g) sgemm(0, 1, n, x->cols, out, gy, out, w, out, 1.0f, x->g, x->cols);
        sgemm(1, 0, x->cols, out, n, x->v, x->cols, gy, out, 1.0f, wt->g + row * out, out);
        row += x->cols;
    }
    for (int k = 0; k < nd->n_cats; k++) {
        for (int64_t i = 0; i < n; i++) {
            int32_t code = bt->cat[i * bt->n_cat + nd->cat_col[k]];
            float *gw = wt->g + (row + code) * out;
            for (int64_t o = 0; o < out; o++) gw[o] += gy[i * out + o];
        }
        row += nd->cat_width[k];
    }
}

static void batchnorm_forward(AvGraph *g, AvNode *nd) {
    AvTensor *x = nd->in[0], *gamma = nd->in[1], *beta = nd->in[2], *y = nd->out;
    int64_t n = g->n, c = x->cols;
    float *mean = nd->aux, *istd = nd->aux + c;
    if (g->training) {
        double *s = (double *)nd->aux2;
        memset(s, 0, sizeof(double) * 2 * (size_t)c);
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < c; j++) {
                double v = x->v[i * c + j];
                s[j] += v;
                s[c + j] += v * v;
            }
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
    memset(s, 0, sizeof(double) * 2 * (size_t)c);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < c; j++) {
            double dy = y->g[i * c + j], xh = (x->v[i * c + j] - mean[j]) * istd[j];
            s[j] += dy;
            s[c + j] += dy * xh;
        }
    for (int64_t j = 0; j < c; j++) {
        beta->g[j] += (float)s[j];
        gamma->g[j] += (float)s[c + j];
    }
    if (!x->g) return;
    if (!g->training) {
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < c; j++)
                x->g[i * c + j] += y->g[i * c + j] * gamma->v[j] * istd[j];
        return;
    }
    if (g->reduce) g->reduce(s, 2 * c); /* the statistics are global, so are their gradients */
    double ng = (double)g->batch->n_global;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < c; j++) {
            double xh = (x->v[i * c + j] - mean[j]) * istd[j];
            double d = (ng * y->g[i * c + j] - s[j] - xh * s[c + j]) * gamma->v[j] * istd[j] / ng;
            x->g[i * c + j] += (float)d;
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
        for (int64_t j = 0; j < c; j++)
            x->g[i * c + j] += nd->aux[i] * (float)(gy[j] - sg - yh[j] * sgy);
    }
}

/* Standard normals for (cell, step, stream): four per Philox call. */
static void fill_normal(AvGraph *g, int stream, float *dst, int64_t cols) {
    const AvBatch *bt = g->batch;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < g->n; i++) {
        uint64_t cell = (uint64_t)bt->cell[i];
        for (int64_t j = 0; j < cols; j += 4) {
            AvRng4 r = av_philox(g->seed, (uint32_t)cell, (uint32_t)(cell >> 32), (uint32_t)g->step,
                                 ((uint32_t)stream << 20) | (uint32_t)(j >> 2));
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
            AvRng4 r = av_philox(g->seed, (uint32_t)cell, (uint32_t)(cell >> 32), (uint32_t)g->step,
                                 ((uint32_t)nd->stream << 20) | (uint32_t)(j >> 2));
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
AV_CLONES static void softmax_row(const float *restrict x, float *restrict y, int64_t c) {
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

AV_CLONES static void softmax_row_backward(const float *restrict y, const float *restrict gy,
                                           float *restrict gx, int64_t c) {
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < c; j++) s += y[j] * gy[j];
#pragma omp simd
    for (int64_t j = 0; j < c; j++) gx[j] += y[j] * (gy[j] - s);
}

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
        if (g->fill_noise) fill_normal(g, nd->stream, nd->aux, c);
        for (int64_t k = 0; k < n * c; k++) y->v[k] = mu->v[k] + sqrtf(var->v[k]) * nd->aux[k];
        break;
    }
    default:
        break;
    }
}

static void node_backward_elementwise(AvGraph *g, AvNode *nd) {
    AvTensor *x = nd->in[0], *y = nd->out;
    int64_t n = g->n, c = y->cols;
    switch (nd->kind) {
    case AV_OP_RELU:
        if (x->g)
            for (int64_t k = 0; k < n * c; k++) x->g[k] += x->v[k] > 0 ? y->g[k] : 0;
        break;
    case AV_OP_EXP_EPS:
        if (x->g)
            for (int64_t k = 0; k < n * c; k++) x->g[k] += y->g[k] * (y->v[k] - nd->f0);
        break;
    case AV_OP_DROPOUT:
        if (x->g) {
            if (g->training)
                for (int64_t k = 0; k < n * c; k++) x->g[k] += y->g[k] * nd->aux[k];
            else
                for (int64_t k = 0; k < n * c; k++) x->g[k] += y->g[k];
        }
        break;
    case AV_OP_SOFTMAX:
        if (!x->g) break;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++)
            softmax_row_backward(y->v + i * c, y->g + i * c, x->g + i * c, c);
        break;
    case AV_OP_REPARAM: {
        AvTensor *mu = nd->in[0], *var = nd->in[1];
        for (int64_t k = 0; k < n * c; k++) {
            if (mu->g) mu->g[k] += y->g[k];
            if (var->g) var->g[k] += y->g[k] * nd->aux[k] * 0.5f / sqrtf(var->v[k]);
        }
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
                if (mu->g) mu->g[i * c + j] += go * dmu;
                if (var->g) var->g[i * c + j] += go * dv;
            }
        }
        if (!backward) y->v[i] = (float)s;
    }
}

/* Per-gene tables of the dispersion, laid out [code][gene] so that a cell's row is
 * contiguous: theta, log(theta + eps), 1 / (theta + eps), lgamma(theta), digamma(theta). */
static void theta_tables(const AvNode *nd, int64_t G, float *tab) {
    const AvTensor *pxr = nd->in[2];
    int64_t C = nd->disp == AV_DISP_GENE ? 1 : pxr->cols, nt = C * G;
    for (int64_t c = 0; c < C; c++)
        for (int64_t j = 0; j < G; j++) {
            float th = expf(pxr->v[nd->disp == AV_DISP_GENE ? j : j * C + c]);
            int64_t t = c * G + j;
            tab[t] = th;
            tab[nt + t] = logf(th + AV_NB_EPS);
            tab[2 * nt + t] = 1.0f / (th + AV_NB_EPS);
            tab[3 * nt + t] = av_lgamma(th);
            tab[4 * nt + t] = av_digamma(th);
        }
}

/* One cell of the NB / ZINB likelihood, in chunks of genes: every gene of the chunk as a
 * zero count (plain float arrays in and out, no branches: vectorizes), then the chunk's
 * non-zeros corrected from the zero-count values kept in small stack arrays (no
 * recomputation), with the lgamma / digamma differences of av_lgamma_digamma_diff.
 * Writes d ll / d mu, theta * d ll / d theta and d ll / d pi per gene; returns the cell's
 * log-likelihood. th, lt, ite: theta, log(theta + eps), 1 / (theta + eps) of the cell's
 * genes; lgt, dgt: lgamma and digamma of theta (per-gene tables) or NULL (computed when
 * needed); pxc: the cell's log thetas when they are per cell (then th, lt, ite are NULL). */
#define NLL_CHUNK 256
AV_CLONES static double count_nll_cell(int64_t G, float L, const float *r, const float *pr,
                                       const float *th_g, const float *lt_g, const float *ite_g,
                                       const float *lgt, const float *dgt, const float *pxc,
                                       const int32_t *idx, const float *cnt, int64_t nnz, float *a,
                                       float *b, float *c) {
    float th_s[NLL_CHUNK], lt_s[NLL_CHUNK], ite_s[NLL_CHUNK];
    float zl[NLL_CHUNK], ltm[NLL_CHUNK], spn[NLL_CHUNK], snp[NLL_CHUNK];
    double s = 0;
    int64_t k = 0;
    for (int64_t j0 = 0; j0 < G; j0 += NLL_CHUNK) {
        int64_t n = G - j0 < NLL_CHUNK ? G - j0 : NLL_CHUNK;
        const float *th, *lt, *ite;
        if (pxc) {
#pragma omp simd
            for (int64_t j = 0; j < n; j++) {
                float t = av_expf(pxc[j0 + j]);
                th_s[j] = t;
                lt_s[j] = av_logf(t + AV_NB_EPS);
                ite_s[j] = 1.0f / (t + AV_NB_EPS);
            }
            th = th_s, lt = lt_s, ite = ite_s;
        } else {
            th = th_g + j0, lt = lt_g + j0, ite = ite_g + j0;
        }
        const float *rj = r + j0;
        float *aj = a + j0, *bj = b + j0, *cj = c + j0, zs = 0;
        if (pr) {
            const float *pj = pr + j0;
#pragma omp simd reduction(+ : zs)
            for (int64_t j = 0; j < n; j++) {
                float theta = th[j], tm = theta + L * rj[j] + AV_NB_EPS, inv_tm = 1.0f / tm;
                float l_tm = av_logf(tm), d = lt[j] - l_tm;
                float nb = theta * d, dmu_nb = -theta * inv_tm;
                float dth_nb = d + theta * (ite[j] - inv_tm);
                /* softplus and sigmoid of nb - pi and of -pi */
                float x1 = nb - pj[j], e1 = av_expf(-fabsf(x1)), i1 = 1.0f / (1.0f + e1);
                float ei1 = e1 * i1, s_a = x1 >= 0.0f ? i1 : ei1;
                float sp_a = (x1 > 0.0f ? x1 : 0.0f) + av_log1pf_unit(e1);
                float x2 = -pj[j], e2 = av_expf(-fabsf(x2)), i2 = 1.0f / (1.0f + e2);
                float ei2 = e2 * i2, s_n = x2 >= 0.0f ? i2 : ei2;
                float sp_n = (x2 > 0.0f ? x2 : 0.0f) + av_log1pf_unit(e2);
                float ll = sp_a - sp_n;
                zs += ll;
                zl[j] = ll, ltm[j] = l_tm, spn[j] = sp_n, snp[j] = s_n;
                aj[j] = s_a * dmu_nb;
                bj[j] = theta * (s_a * dth_nb);
                cj[j] = s_n - s_a;
            }
        } else {
#pragma omp simd reduction(+ : zs)
            for (int64_t j = 0; j < n; j++) {
                float theta = th[j], tm = theta + L * rj[j] + AV_NB_EPS, inv_tm = 1.0f / tm;
                float l_tm = av_logf(tm), d = lt[j] - l_tm;
                float ll = theta * d;
                zs += ll;
                zl[j] = ll, ltm[j] = l_tm;
                aj[j] = -theta * inv_tm;
                bj[j] = theta * (d + theta * (ite[j] - inv_tm));
                cj[j] = 0.0f;
            }
        }
        s += zs;
        /* the chunk's non-zeros (indices are sorted) */
        for (; k < nnz && idx[k] < j0 + n; k++) {
            int64_t jj = idx[k], j = jj - j0;
            float x = cnt[k], theta = th[j], mu = L * r[jj];
            float tm = theta + mu + AV_NB_EPS, inv_tm = 1.0f / tm, l_tm = ltm[j];
            float lg_t = 0, dg_t = 0;
            int small = (float)(int)x == x && x <= 16.0f;
            if (!small) {
                lg_t = lgt ? lgt[jj] : av_lgamma(theta);
                dg_t = dgt ? dgt[jj] : av_digamma(theta);
            }
            float dlg, ddg;
            av_lgamma_digamma_diff(x, theta, lg_t, dg_t, &dlg, &ddg);
            float d = lt[j] - l_tm;
            float ll = theta * d + x * (av_logf(mu + AV_NB_EPS) - l_tm) + dlg - av_lgamma_count(x);
            float dmu = -theta * inv_tm + x / (mu + AV_NB_EPS) - x * inv_tm;
            float dth = d + theta * (ite[j] - inv_tm) - x * inv_tm + ddg;
            float dpi = 0.0f;
            if (pr) { /* -softplus(-pi) - pi + log NB(x) */
                ll += -pr[jj] - spn[j];
                dpi = snp[j] - 1.0f; /* = -sigmoid(pi) */
            }
            s += (double)ll - zl[j];
            a[jj] = dmu;
            b[jj] = theta * dth;
            c[jj] = dpi;
        }
    }
    return s;
}

/* Per cell: the NB / ZINB terms in count_nll_cell, Poisson inline. Saved per element for
 * the backward pass: d ll / d mu, theta * d ll / d theta and d ll / d pi. */
static void count_nll_forward(AvGraph *g, AvNode *nd) {
    AvTensor *rho = nd->in[0], *lib = nd->in[1], *pxr = nd->in[2], *pi = nd->in[3], *y = nd->out;
    const AvBatch *bt = g->batch;
    int64_t n = g->n, G = rho->cols;
    int per_gene = pxr && nd->disp != AV_DISP_GENE_CELL;
    int64_t nt = per_gene ? (nd->disp == AV_DISP_GENE ? 1 : pxr->cols) * G : 0;
    float *tab = nd->aux2;
    if (per_gene) theta_tables(nd, G, tab);
    float *dmu = nd->aux, *dth = nd->aux + g->max_batch * G, *dpi = nd->aux + 2 * g->max_batch * G;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float L = expf(lib->v[i]);
        const float *r = rho->v + i * G;
        float *a = dmu + i * G, *b = dth + i * G, *c = dpi + i * G;
        int64_t k0 = bt->indptr[i], k1 = bt->indptr[i + 1];
        if (nd->lik == AV_LIK_POISSON) {
            double s = 0;
            for (int64_t j = 0; j < G; j++) {
                float mu = L * r[j];
                s -= mu;
                a[j] = -1.0f, b[j] = 0.0f, c[j] = 0.0f;
            }
            for (int64_t k = k0; k < k1; k++) {
                int64_t j = bt->indices[k];
                float x = bt->counts[k], mu = L * r[j];
                s += x * logf(mu) - av_lgamma_count(x);
                a[j] += x / mu;
            }
            y->v[i] = (float)-s;
            continue;
        }
        int64_t code = nd->disp == AV_DISP_GENE_BATCH || nd->disp == AV_DISP_GENE_LABEL
                           ? bt->cat[i * bt->n_cat + nd->code_col]
                           : 0;
        const float *pr = nd->lik == AV_LIK_ZINB ? pi->v + i * G : NULL;
        double s;
        if (per_gene) {
            const float *t0 = tab + code * G;
            s = count_nll_cell(G, L, r, pr, t0, t0 + nt, t0 + 2 * nt, t0 + 3 * nt, t0 + 4 * nt,
                               NULL, bt->indices + k0, bt->counts + k0, k1 - k0, a, b, c);
        } else {
            s = count_nll_cell(G, L, r, pr, NULL, NULL, NULL, NULL, NULL, pxr->v + i * G,
                               bt->indices + k0, bt->counts + k0, k1 - k0, a, b, c);
        }
        y->v[i] = (float)-s;
    }
}

static void count_nll_backward(AvGraph *g, AvNode *nd) {
    AvTensor *rho = nd->in[0], *lib = nd->in[1], *pxr = nd->in[2], *pi = nd->in[3], *y = nd->out;
    const AvBatch *bt = g->batch;
    int64_t n = g->n, G = rho->cols;
    const float *dmu = nd->aux, *dth = nd->aux + g->max_batch * G,
                *dpi = nd->aux + 2 * g->max_batch * G;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float go = -y->g[i], L = expf(lib->v[i]);
        double dl = 0;
        for (int64_t j = 0; j < G; j++) {
            int64_t e = i * G + j;
            if (rho->g) rho->g[e] += go * L * dmu[e];
            dl += (double)rho->v[e] * dmu[e];
            if (pi && pi->g) pi->g[e] += go * dpi[e];
            if (pxr && nd->disp == AV_DISP_GENE_CELL && pxr->g) pxr->g[e] += go * dth[e];
        }
        if (lib->g) lib->g[i] += go * L * (float)dl;
    }
    if (pxr && nd->disp != AV_DISP_GENE_CELL) {
        /* per-gene parameters: accumulate serially over cells (cheap, race-free) */
        for (int64_t i = 0; i < n; i++) {
            float go = -y->g[i];
            int64_t stride = 1, base = 0;
            if (nd->disp != AV_DISP_GENE) {
                stride = pxr->cols;
                base = bt->cat[i * bt->n_cat + nd->code_col];
            }
            for (int64_t j = 0; j < G; j++) pxr->g[base + j * stride] += go * dth[i * G + j];
        }
    }
}

static void loss_forward(AvGraph *g, AvNode *nd, int backward) {
    int nt = nd->code_col;
    double ng = (double)g->batch->n_global, total = 0;
    for (int t = 0; t < nt; t++) {
        AvTensor *x = nd->in[t];
        double s = 0;
        for (int64_t i = 0; i < g->n; i++) {
            if (backward) {
                if (x->g) x->g[i] += nd->out->g[0] * (float)(nd->w[t] / ng);
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

static void input_forward(AvGraph *g, AvNode *nd) {
    const AvBatch *bt = g->batch;
    AvTensor *y = nd->out;
    if (nd->kind == AV_OP_INPUT_COUNTS_LOG_LIB) {
        for (int64_t i = 0; i < g->n; i++) {
            double s = 0;
            for (int64_t k = bt->indptr[i]; k < bt->indptr[i + 1]; k++) s += bt->counts[k];
            y->v[i] = (float)log(s);
        }
    } else {
        memcpy(y->v, bt->cont, sizeof(float) * (size_t)(g->n * y->cols));
    }
}

void av_node_forward(AvGraph *g, AvNode *nd) {
    switch (nd->kind) {
    case AV_OP_LINEAR:
        linear_forward(g, nd);
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
        count_nll_forward(g, nd);
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
        linear_backward(g, nd);
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
        count_nll_backward(g, nd);
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
