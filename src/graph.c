/* Graph bookkeeping: the arena, parameter slab, node list and the tape replay. The op
 * kernels themselves live in ops.c. */
#include "src/graph.h"

#include <stdlib.h>
#include <string.h>

#include "src/ops_impl.h"
#include "src/mathx.h"
#include "src/rng.h"
#include "src/util.h"

void av_graph_init(AvGraph *g, int64_t max_batch, uint64_t seed) {
    memset(g, 0, sizeof *g);
    av_lgamma_table_init(); /* idempotent; runs before any op's threads */
    g->max_batch = max_batch;
    g->seed = seed;
    g->training = 1;
    g->fill_noise = 1;
    g->block_size = (size_t)32 << 20;
}

void av_graph_free(AvGraph *g) {
    for (int i = 0; i < g->n_params; i++) free(g->params[i]);
    for (int i = 0; i < g->n_buffers; i++) free(g->buffers[i]);
    for (int i = 0; i < g->n_acts; i++) free(g->acts[i]);
    free(g->params);
    free(g->buffers);
    free(g->acts);
    free(g->nodes);
    free(g->param_v);
    free(g->param_g);
    for (int i = 0; i < g->n_blocks; i++) free(g->blocks[i]);
    free(g->blocks);
    memset(g, 0, sizeof *g);
}

/* Build-time allocation from blocks that never move; zero-filled, 64-byte aligned. */
void *av_arena_alloc(AvGraph *g, size_t bytes) {
    bytes = (bytes + 63) & ~(size_t)63;
    if (g->n_blocks == 0 || g->block_used + bytes > g->block_size) {
        if (g->n_blocks == g->cap_blocks) { /* only the table moves, never a block */
            g->cap_blocks = g->cap_blocks ? 2 * g->cap_blocks : 16;
            g->blocks = av_realloc(g->blocks, sizeof(char *) * (size_t)g->cap_blocks);
        }
        /* an oversized request gets a block of its own, used whole */
        g->blocks[g->n_blocks++] =
            av_calloc_aligned(1, bytes > g->block_size ? bytes : g->block_size);
        g->block_used = 0;
    }
    void *p = g->blocks[g->n_blocks - 1] + g->block_used;
    g->block_used += bytes;
    return p;
}

/* Names are copied into the arena, so callers may pass a temporary buffer. */
static AvTensor *new_tensor(AvGraph *g, int64_t rows, int64_t cols, int batch, const char *name) {
    AvTensor *t = av_calloc(1, sizeof *t);
    t->grad_writer = -1;
    t->rows = rows;
    t->cols = cols;
    t->batch = batch;
    if (name) t->name = strcpy(av_arena_alloc(g, strlen(name) + 1), name);
    return t;
}

/* Parameters start on a cache line (16 floats) in the 64-byte aligned slab, so that
 * vector loads of a weight row never straddle two lines. */
static int64_t pad16(int64_t n) {
    return (n + 15) & ~(int64_t)15;
}

AvTensor *av_param(AvGraph *g, const char *name, int64_t rows, int64_t cols) {
    if (g->n_params == g->cap_params) {
        g->cap_params = g->cap_params ? 2 * g->cap_params : 32;
        g->params = av_realloc(g->params, sizeof(AvTensor *) * (size_t)g->cap_params);
    }
    AvTensor *t = new_tensor(g, rows, cols, 0, name);
    t->offset = g->param_size;
    g->param_size += pad16(rows * cols);
    g->params[g->n_params++] = t;
    return t;
}

void av_graph_alloc_params(AvGraph *g) {
    g->param_v = av_calloc_aligned((size_t)g->param_size, sizeof(float));
    g->param_g = av_calloc_aligned((size_t)g->param_size, sizeof(float));
    for (int i = 0; i < g->n_params; i++) {
        g->params[i]->v = g->param_v + g->params[i]->offset;
        g->params[i]->g = g->param_g + g->params[i]->offset;
    }
}

void av_graph_pack_params(AvGraph *g) {
    float *v = av_calloc_aligned((size_t)g->param_size, sizeof(float));
    float *gr = av_calloc_aligned((size_t)g->param_size, sizeof(float));
    int64_t off = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < g->n_params; i++) {
            AvTensor *t = g->params[i];
            if ((t->used != 0) == pass) continue; /* used ones in pass 0 */
            int64_t n = t->rows * t->cols;
            memcpy(v + off, t->v, sizeof(float) * (size_t)n);
            t->offset = off;
            t->v = v + off;
            t->g = gr + off;
            off += pad16(n);
        }
        if (pass == 0) g->used_size = off;
    }
    free(g->param_v);
    free(g->param_g);
    g->param_v = v;
    g->param_g = gr;
}

AvTensor *av_buffer(AvGraph *g, const char *name, int64_t rows, int64_t cols) {
    g->buffers = av_realloc(g->buffers, sizeof(AvTensor *) * (size_t)(g->n_buffers + 1));
    AvTensor *t = new_tensor(g, rows, cols, 0, name);
    t->v = av_arena_alloc(g, sizeof(float) * (size_t)(rows * cols));
    g->buffers[g->n_buffers++] = t;
    return t;
}

AvTensor *av_param_find(AvGraph *g, const char *name) {
    for (int i = 0; i < g->n_params; i++)
        if (!strcmp(g->params[i]->name, name)) return g->params[i];
    for (int i = 0; i < g->n_buffers; i++)
        if (!strcmp(g->buffers[i]->name, name)) return g->buffers[i];
    return NULL;
}

AvTensor *av_act(AvGraph *g, int64_t rows, int64_t cols, int batch, int needs_grad) {
    int64_t r = batch ? g->max_batch : rows;
    AvTensor *t = new_tensor(g, rows, cols, batch, NULL);
    t->v = av_arena_alloc(g, sizeof(float) * (size_t)(r * cols));
    if (needs_grad) t->g = av_arena_alloc(g, sizeof(float) * (size_t)(r * cols));
    g->acts = av_realloc(g->acts, sizeof(AvTensor *) * (size_t)(g->n_acts + 1));
    g->acts[g->n_acts++] = t;
    return t;
}

AvNode *av_node(AvGraph *g, AvOpKind kind) {
    if (g->n_nodes == g->cap_nodes) {
        g->cap_nodes = g->cap_nodes ? 2 * g->cap_nodes : 64;
        g->nodes = av_realloc(g->nodes, sizeof(AvNode) * (size_t)g->cap_nodes);
    }
    AvNode *nd = &g->nodes[g->n_nodes];
    memset(nd, 0, sizeof *nd);
    nd->kind = kind;
    /* word 3 of a draw keeps only the low 12 bits of the stream, so streams of nodes 256
     * apart agree there; the node id's higher bits go into the top of word 1 (the cell
     * index's high half) and are 0 below node 256, where the keys stay what they were */
    nd->stream = AV_STREAM_NOISE + 16 * (g->n_nodes + 1);
    nd->stream_hi = ((uint32_t)g->n_nodes >> 8) << 16;
    g->n_nodes++;
    return nd;
}

/* Marks parameters read by an op: the others get no gradient and no Adam update. */
void av_mark_used(AvTensor *t) {
    if (t) t->used = 1;
}

void av_graph_forward(AvGraph *g, const AvBatch *batch) {
    g->batch = batch;
    g->n = batch->n;
    memset(g->loss_terms, 0, sizeof g->loss_terms);
    for (int i = 0; i < g->n_nodes; i++) av_node_forward(g, &g->nodes[i]);
}

void av_graph_forward_until(AvGraph *g, const AvBatch *batch, const AvTensor *until) {
    g->batch = batch;
    g->n = batch->n;
    for (int i = 0; i < g->n_nodes; i++) {
        av_node_forward(g, &g->nodes[i]);
        if (g->nodes[i].out == until) break;
    }
}

static int cmp_tensor_ptr(const void *a, const void *b) {
    uintptr_t x = (uintptr_t) * (AvTensor *const *)a, y = (uintptr_t) * (AvTensor *const *)b;
    return (x > y) - (x < y);
}

/* Every input slot of every node, sorted by tensor, so that a tensor's uses are one run. */
static int64_t sorted_inputs(const AvGraph *g, AvTensor ***out) {
    int64_t n = 0;
    for (int i = 0; i < g->n_nodes; i++) n += av_node_n_in(&g->nodes[i]);
    AvTensor **in = av_malloc(sizeof *in * (size_t)(n ? n : 1));
    n = 0;
    for (int i = 0; i < g->n_nodes; i++)
        for (int s = 0; s < av_node_n_in(&g->nodes[i]); s++)
            if (av_node_in(&g->nodes[i], s)) in[n++] = av_node_in(&g->nodes[i], s);
    qsort(in, (size_t)n, sizeof *in, cmp_tensor_ptr);
    *out = in;
    return n;
}

/* Whether t occurs exactly once in the sorted list (it occurs at least once). */
static int used_once(AvTensor *const *in, int64_t n, const AvTensor *t) {
    int64_t lo = 0, hi = n;
    while (lo < hi) { /* first entry >= t */
        int64_t mid = lo + (hi - lo) / 2;
        if ((uintptr_t)in[mid] < (uintptr_t)t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo + 1 == n || in[lo + 1] != t;
}

/* Gradients that one op writes whole need no zeroing: the tensor's only consumer
 * assigns them (ops.c's av_node_assigns says which op slots can). Counting uses over all
 * nodes' inputs keeps a tensor read twice (even by one node) accumulating. Sorting makes
 * this O(n log n) in the inputs, with no size limit, once per graph. */
static void plan_grads(AvGraph *g) {
    AvTensor **in;
    int64_t n_in = sorted_inputs(g, &in);
    for (int i = 0; i < g->n_nodes; i++) {
        AvNode *nd = &g->nodes[i];
        if (!nd->out->g) continue; /* its backward does not run */
        for (int s = 0; s < av_node_n_in(nd); s++) {
            AvTensor *t = av_node_in(nd, s);
            if (!t || !t->g || !av_node_assigns(nd, s) || !used_once(in, n_in, t)) continue;
            nd->assign |= 1u << s;
            t->grad_writer = i;
        }
    }
    free(in);
    g->grads_planned = 1;
}

static int zeroed(const AvTensor *t, int last) {
    return t->grad_writer < 0 || t->grad_writer > last;
}

/* Zeroes n floats, split over the team where that pays (the sparse first layer's weight
 * gradient, 1 MB, is the one left to zero in the default model). */
static void zero_floats(float *p, int64_t n) {
    enum { CHUNK = 1 << 14 };
    int64_t nc = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (nc >= 8)
    for (int64_t c = 0; c < nc; c++) {
        int64_t lo = c * CHUNK, len = n - lo < CHUNK ? n - lo : CHUNK;
        memset(p + lo, 0, sizeof(float) * (size_t)len);
    }
}

void av_graph_zero_grads(AvGraph *g, int last) {
    if (!g->grads_planned) plan_grads(g);
    for (int i = 0; i < g->n_params; i++) {
        AvTensor *t = g->params[i];
        if (t->used && zeroed(t, last)) /* unused ones stay zero from allocation */
            zero_floats(t->g, t->rows * t->cols);
    }
    for (int i = 0; i < g->n_acts; i++) {
        AvTensor *t = g->acts[i];
        if (t->g && zeroed(t, last)) zero_floats(t->g, av_rows(g, t) * t->cols);
    }
}

void av_graph_backward_from(AvGraph *g, AvTensor *y, const float *gy) {
    int last = g->n_nodes - 1;
    while (last >= 0 && g->nodes[last].out != y) last--;
    if (last < 0) return;
    av_graph_zero_grads(g, last);
    memcpy(y->g, gy, sizeof(float) * (size_t)(av_rows(g, y) * y->cols));
    for (int i = last; i >= 0; i--) av_node_backward(g, &g->nodes[i]);
}

void av_graph_backward(AvGraph *g) {
    const float one = 1.0f;
    if (g->loss) av_graph_backward_from(g, g->loss, &one);
}
