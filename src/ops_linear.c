/* The linear op's kernels: dense blocks through GEMM, the sparse log1p(counts) first
 * layer (ops_sparse.c), one-hot covariate injection. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math") /* see ops.c */
#endif
#include <omp.h>
#include <string.h>

#include "src/gemm.h"
#include "src/isa.h"
#include "src/mathx.h"
#include "src/ops_impl.h"

/* Element-wise passes over [n, out] outputs are split over the team from this size on
 * (the decoder heads' 128 x 2000); below it one thread is faster than waking the team. */
#define LINEAR_PAR_MIN (1 << 15)

/* y rows = bias (or zero) before the GEMMs accumulate into them. */
static void bias_rows(float *y, const float *bias, int64_t n, int64_t out) {
#pragma omp parallel for schedule(static) if (n * out >= LINEAR_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        if (bias)
            memcpy(y + i * out, bias, sizeof(float) * (size_t)out);
        else
            memset(y + i * out, 0, sizeof(float) * (size_t)out);
    }
}

/* gb (=, or += when accumulating) column sums of gy [n, out]: each thread owns a range of
 * columns, so the sums do not depend on the thread count. */
AV_ISA_BODY void bias_grad_cols_body(const float *restrict gy, float *restrict gb, int64_t n,
                                     int64_t out, int64_t o0, int64_t o1, int assign) {
    if (assign)
        for (int64_t o = o0; o < o1; o++) gb[o] = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        const float *r = gy + i * out;
#pragma omp simd
        for (int64_t o = o0; o < o1; o++) gb[o] += r[o];
    }
}
AV_DISPATCH_VOID(bias_grad_cols,
                 (const float *restrict gy, float *restrict gb, int64_t n, int64_t out, int64_t o0,
                  int64_t o1, int assign),
                 (gy, gb, n, out, o0, o1, assign))

static void bias_grad(const float *gy, float *gb, int64_t n, int64_t out, int assign) {
#pragma omp parallel if (n * out >= LINEAR_PAR_MIN)
    {
        int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
        int64_t o0 = out * t / nt / 16 * 16, o1 = t + 1 == nt ? out : out * (t + 1) / nt / 16 * 16;
        bias_grad_cols(gy, gb, n, out, o0, o1, assign);
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

void av_linear_forward(AvGraph *g, AvNode *nd) {
    const AvBatch *bt = g->batch;
    AvTensor *wt = nd->in[2], *b = nd->in[3], *y = nd->out;
    int64_t n = g->n, out = wt->cols, row = linear_sparse_rows(nd);
    /* the bias goes in with the first dense block's GEMM (its store), else beforehand */
    int filled = 0;
    if (nd->sparse_in || (!nd->in[0] && !nd->in[1])) {
        bias_rows(y->v, b ? b->v : NULL, n, out);
        filled = 1;
    }
    if (nd->sparse_in) av_sparse_linear_forward(nd->sparse_in, bt, n, wt->v, out, y->v);
    for (int s = 0; s < 2; s++) {
        AvTensor *x = nd->in[s];
        if (!x) continue;
        const float *w = wt->v + row * out;
        if (filled)
            av_sgemm(0, 0, n, out, x->cols, x->v, x->cols, w, out, 1.0f, y->v, out);
        else
            av_sgemm_bias(0, 0, n, out, x->cols, x->v, x->cols, w, out, b ? b->v : NULL, y->v, out);
        filled = 1;
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

void av_linear_backward(AvGraph *g, AvNode *nd) {
    const AvBatch *bt = g->batch;
    AvTensor *wt = nd->in[2], *b = nd->in[3], *y = nd->out;
    int64_t n = g->n, out = wt->cols, row = linear_sparse_rows(nd);
    const float *gy = y->g;
    if (b) bias_grad(gy, b->g, n, out, av_assigns(nd, 3));
    if (nd->sparse_in) av_sparse_linear_backward(nd->sparse_in, bt, n, gy, wt->g, out);
    for (int s = 0; s < 2; s++) {
        AvTensor *x = nd->in[s];
        if (!x) continue;
        const float *w = wt->v + row * out;
        if (x->g)
            av_sgemm(0, 1, n, x->cols, out, gy, out, w, out, av_assigns(nd, s) ? 0.0f : 1.0f, x->g,
                     x->cols);
        /* n = 0 (an empty minibatch share): av_sgemm scales the gradient by beta */
        av_sgemm(1, 0, x->cols, out, n, x->v, x->cols, gy, out, av_assigns(nd, 2) ? 0.0f : 1.0f,
                 wt->g + row * out, out);
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
