/* Internal to the core: what graph.c and ops.c share. */
#ifndef AV_OPS_IMPL_H
#define AV_OPS_IMPL_H
#include <stddef.h>

#include "src/graph.h"

void *av_arena_alloc(AvGraph *g, size_t bytes);
AvTensor *av_act(AvGraph *g, int64_t rows, int64_t cols, int batch, int needs_grad);
AvNode *av_node(AvGraph *g, AvOpKind kind);
void av_mark_used(AvTensor *t);
void av_node_forward(AvGraph *g, AvNode *nd);
void av_node_backward(AvGraph *g, AvNode *nd);
/* Whether the node's backward can assign in[s]'s whole gradient (rows 0..n) instead of
 * adding to it; graph.c lets it where the node is the tensor's only consumer. */
int av_node_assigns(const AvNode *nd, int s);
static inline int av_assigns(const AvNode *nd, int s) {
    return (nd->assign >> s) & 1u;
}
/* A node's input slots: in[0..4), or the loss node's terms. */
static inline int av_node_n_in(const AvNode *nd) {
    return nd->kind == AV_OP_LOSS ? nd->n_terms : 4;
}
static inline AvTensor *av_node_in(const AvNode *nd, int s) {
    return nd->kind == AV_OP_LOSS ? nd->terms[s] : nd->in[s];
}

/* op kernels that live in their own files */
void av_linear_forward(AvGraph *g, AvNode *nd);
void av_linear_backward(AvGraph *g, AvNode *nd);
void av_count_nll_forward(AvGraph *g, AvNode *nd);
/* the sparse first layer: y[i] += v(counts of cell i) W, gw += v(counts)^T gy (mode 1:
 * v = log1p, else the counts); y, gy are [n, out] row-major, W and gw [in, out] */
void av_sparse_linear_forward(int mode, const AvBatch *bt, int64_t n, const float *wt, int64_t out,
                              float *y);
void av_sparse_linear_backward(int mode, const AvBatch *bt, int64_t n, const float *gy, float *gw,
                               int64_t out);
void av_count_nll_backward(AvGraph *g, AvNode *nd);

#endif
