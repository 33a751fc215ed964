/* The sparse first layer of the encoders: y = log1p(counts) W (or counts W) for a CSR
 * minibatch, and its weight gradient dW += log1p(counts)^T dy. W is [in, out]. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math") /* see ops.c */
#endif
#include <omp.h>

#include "src/mathx.h"
#include "src/ops_impl.h"

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

void av_sparse_linear_forward(int mode, const AvBatch *bt, int64_t n, const float *wt, int64_t out,
                              float *y) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        int64_t k0 = bt->indptr[i];
        sparse_row_forward(mode, bt->indices + k0, bt->counts + k0, bt->indptr[i + 1] - k0, wt, out,
                           y + i * out);
    }
}

void av_sparse_linear_backward(int mode, const AvBatch *bt, int64_t n, const float *gy, float *gw,
                               int64_t out) {
    /* threads own disjoint slices of output columns, so scatters never collide */
#pragma omp parallel
    {
        int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
        int64_t o0 = out * t / nt, o1 = out * (t + 1) / nt;
        if (nt > 1) o0 &= ~(int64_t)15, o1 = t == nt - 1 ? out : o1 & ~(int64_t)15;
        for (int64_t i = 0; i < n; i++) {
            int64_t k0 = bt->indptr[i];
            sparse_row_backward(mode, bt->indices + k0, bt->counts + k0, bt->indptr[i + 1] - k0,
                                gy + i * out, gw, out, o0, o1);
        }
    }
}
