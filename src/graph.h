/* The compute core: 2-D float32 tensors, a static graph (tape) built once per model
 * and replayed every step forward then backward, and an arena so that nothing is
 * allocated inside the step loop. In the spirit of ggml: ops append nodes; the graph
 * owns every buffer. */
#ifndef AV_GRAPH_H
#define AV_GRAPH_H
#include <stddef.h>
#include <stdint.h>

/* A tensor is rows x cols, row-major, cells on rows. A "batch" tensor has one row per
 * cell of the current minibatch: its row count is the graph's n at run time and its
 * buffers are sized for the largest minibatch. g is NULL when no gradient is needed. */
typedef struct {
    int64_t rows, cols;
    int batch;
    float *v, *g;
    const char *name; /* parameters: the scvi-tools state-dict name */
    int64_t offset;   /* parameters: position in the parameter slab */
    int used;         /* parameters: read by some op (others get no gradient, no update) */
    int transposed;   /* linear weights: stored [in, out], torch's [out, in] transposed */
    /* index of the node whose backward assigns this gradient whole (its only consumer),
     * or -1: then the gradient is zeroed before backward and consumers accumulate */
    int grad_writer;
} AvTensor;

/* Minibatch inputs, owned by the caller and refreshed before each forward. Counts are
 * the raw counts of the local cells as CSR; categorical codes are [n, n_cat] row-major. */
typedef struct {
    int n;               /* local cells */
    int64_t n_global;    /* cells in the global minibatch: the loss divides by this */
    const int64_t *cell; /* global cell index of each local cell (keys the RNG) */
    const int64_t *indptr;
    const int32_t *indices;
    const float *counts;
    int n_cat;
    const int32_t *cat;
    int n_cont;
    const float *cont; /* [n, n_cont] */
} AvBatch;

typedef enum {
    AV_OP_LINEAR,
    AV_OP_BATCHNORM,
    AV_OP_LAYERNORM,
    AV_OP_RELU,
    AV_OP_DROPOUT,
    AV_OP_EXP_EPS,
    AV_OP_REPARAM,
    AV_OP_SOFTMAX,
    AV_OP_KL_NORMAL,
    AV_OP_COUNT_NLL,
    AV_OP_LOSS,
    AV_OP_INPUT_COUNTS_LOG_LIB,
    AV_OP_INPUT_CONT,
    AV_OP_XENT,
    AV_OP_KL_CATEGORICAL,
    AV_OP_NORMAL_LOGPDF,
    AV_OP_N
} AvOpKind;

typedef enum { AV_LIK_ZINB, AV_LIK_NB, AV_LIK_POISSON } AvLikelihood;
typedef enum {
    AV_DISP_GENE,
    AV_DISP_GENE_BATCH,
    AV_DISP_GENE_LABEL,
    AV_DISP_GENE_CELL
} AvDispersion;

#define AV_MAX_CATS 16
/* av_op_loss refuses more terms than this (a clear error, not an overrun); the per-step
 * sums and weights are fixed arrays so that callers can index them directly */
#define AV_MAX_LOSS_TERMS 16

typedef struct {
    AvOpKind kind;
    AvTensor *out;
    AvTensor *in[4];
    /* linear: sparse log1p(counts) input, covariate one-hot blocks */
    int sparse_in, n_cats, cat_col[AV_MAX_CATS], cat_width[AV_MAX_CATS];
    /* count nll: likelihood, dispersion source; kl: prior by code column */
    int lik, disp, code_col;
    float f0; /* dropout p, eps, bn eps, bn momentum ... */
    float f1;
    int stream;         /* RNG stream of this node (Philox counter word 3) */
    uint32_t stream_hi; /* its node id / 256 << 16, xored into word 1 (ops.c node_draw) */
    float *aux;         /* saved forward state (bn mean/istd, dropout mask, noise ...) */
    float *aux2;        /* more saved state */
    /* loss: its terms (in the arena; in[] has room for four) and their weights */
    int n_terms;
    AvTensor **terms;
    float w[AV_MAX_LOSS_TERMS];
    float *running_mean, *running_var; /* batch norm buffers */
    unsigned assign; /* bit s: backward assigns input s's gradient (av_node_in) whole */
} AvNode;

/* Reduces a double buffer across ranks in place (sum). Set by the trainer; the default
 * does nothing, so a model never knows how many ranks there are. */
typedef void (*AvReduceFn)(double *buf, int64_t n);

typedef struct {
    /* parameters: one slab of values and one of gradients, so a single all-reduce
     * covers every gradient */
    int n_params, cap_params;
    AvTensor **params;
    int64_t param_size, param_cap;
    float *param_v, *param_g;
    /* after av_graph_pack_params: the parameters that ops read come first, in
     * [0, used_size); the rest (declared for the state dict, e.g. the library encoder
     * under observed library sizes) keep zero gradients and need no all-reduce */
    int64_t used_size;
    /* non-trainable state saved with the model (batch norm running stats, priors) */
    int n_buffers;
    AvTensor **buffers;
    /* the tape */
    int n_nodes, cap_nodes;
    AvNode *nodes;
    int64_t max_batch;
    /* arena: blocks that never move, filled while the graph is built; the table of
     * block pointers grows, the blocks themselves stay put */
    int n_blocks, cap_blocks;
    char **blocks;
    size_t block_size, block_used;
    int n_acts;
    AvTensor **acts;   /* activations (their gradients are zeroed or assigned each step) */
    int grads_planned; /* grad_writer / assign are set (first backward) */
    /* per-step state */
    int n; /* rows of batch tensors this step */
    const AvBatch *batch;
    int training;   /* batch norm batch statistics, dropout on */
    int fill_noise; /* 0: tests write the noise buffers themselves */
    uint64_t seed;
    int64_t step; /* keys the RNG */
    AvReduceFn reduce;
    AvTensor *loss;
    double loss_terms[AV_MAX_LOSS_TERMS]; /* sums over local cells of each loss term */
} AvGraph;

void av_graph_init(AvGraph *g, int64_t max_batch, uint64_t seed);
void av_graph_free(AvGraph *g);
/* Call once after all params are declared and before any op is added. */
void av_graph_alloc_params(AvGraph *g);

/* Declares a parameter (state-dict name, shape); storage comes from the param slab. */
AvTensor *av_param(AvGraph *g, const char *name, int64_t rows, int64_t cols);
/* A buffer saved with the model but not trained (running stats, priors). */
AvTensor *av_buffer(AvGraph *g, const char *name, int64_t rows, int64_t cols);
AvTensor *av_param_find(AvGraph *g, const char *name);
/* Call once after the ops are built: reorders the slab so that the parameters the ops
 * read are a prefix of used_size floats (values move with their tensors). */
void av_graph_pack_params(AvGraph *g);

/* Ops. Each appends one node and returns its output (a batch tensor unless stated). */
/* Log library log(sum counts) of every cell [n,1], no gradient. */
AvTensor *av_op_log_library(AvGraph *g);
/* Continuous covariates as a tensor [n, n_cont], no gradient. */
AvTensor *av_op_cont_input(AvGraph *g, int64_t n_cont);
/* y = [log1p(counts) | x1 | x2] W + b + sum_k W[cat block k, code_k]. wt is stored as
 * [in, out] (the transpose of torch's Linear weight); any input may be absent. */
AvTensor *av_op_linear(AvGraph *g, int sparse_in, AvTensor *x1, AvTensor *x2, AvTensor *wt,
                       AvTensor *b, int n_cats, const int *cat_col, const int *cat_width);
/* BatchNorm1d (eps 1e-3, momentum 0.01): batch statistics over the global minibatch in
 * training mode (reduced through g->reduce), running statistics in eval mode. */
AvTensor *av_op_batchnorm(AvGraph *g, AvTensor *x, AvTensor *gamma, AvTensor *beta,
                          AvTensor *running_mean, AvTensor *running_var);
/* LayerNorm without affine parameters, eps 1e-5. */
AvTensor *av_op_layernorm(AvGraph *g, AvTensor *x);
AvTensor *av_op_relu(AvGraph *g, AvTensor *x);
/* Inverted dropout in training mode; identity in eval mode. */
AvTensor *av_op_dropout(AvGraph *g, AvTensor *x, float p);
/* y = exp(x) + eps */
AvTensor *av_op_exp_eps(AvGraph *g, AvTensor *x, float eps);
/* z = mu + sqrt(var) * noise; noise ~ N(0,1) keyed by (seed, step, cell, stream). The
 * noise buffer is the returned node's aux; av_noise_of() exposes it to tests. */
AvTensor *av_op_reparam(AvGraph *g, AvTensor *mu, AvTensor *var);
float *av_noise_of(AvGraph *g, AvTensor *z);
/* The mask buffer [max_batch, cols] of the k-th dropout node in graph order (entries 0
 * or 1/(1-p)); with g->fill_noise = 0 forward uses it as it is (tests set it). */
float *av_dropout_mask(AvGraph *g, int k);
/* Row softmax. */
AvTensor *av_op_softmax(AvGraph *g, AvTensor *x);
/* Per cell KL(N(mu, sqrt(var)) || prior) summed over columns [n,1]. Prior N(0,1) when
 * prior_mean is NULL, else N(prior_mean[code], sqrt(prior_var[code])) with the code
 * from column code_col of the batch's categorical codes. */
AvTensor *av_op_kl_normal(AvGraph *g, AvTensor *mu, AvTensor *var, AvTensor *prior_mean,
                          AvTensor *prior_var, int code_col);
/* Per cell negative log-likelihood of the counts [n,1] with mean exp(log_lib) * rho.
 * theta: log-dispersion px_r as a parameter ([1,G], or [G,B] / [G,K] indexed by the
 * code in column code_col) or, for gene-cell, a batch tensor [n,G]. pi: zero-inflation
 * logits [n,G] (ZINB only). */
AvTensor *av_op_count_nll(AvGraph *g, AvTensor *rho, AvTensor *log_lib, AvTensor *px_r,
                          AvTensor *pi, AvLikelihood lik, AvDispersion disp, int code_col);
/* Per cell cross-entropy -log softmax(logits)[y] [n,1] (scANVI's classification loss,
 * torch's cross_entropy before its mean), y the code in column code_col of the batch's
 * categorical codes. A code outside 0..cols-1 (an unlabelled cell) gives 0 and no
 * gradient. */
AvTensor *av_op_xent(AvGraph *g, AvTensor *logits, int code_col);
/* Per cell KL(Cat(q) || Cat(prior)) [n,1] of probabilities q [n,K] against a [1,K]
 * prior, as torch.distributions: q is normalised to sum 1 and both enter the log
 * clamped to [eps, 1 - eps], eps = FLT_EPSILON (scANVI's kl_divergence of y). */
AvTensor *av_op_kl_categorical(AvGraph *g, AvTensor *q, AvTensor *prior);
/* Per row sum_j log N(x_j; mu_j, sqrt(var_j)) [rows,1] (scANVI's log q(z1|x) and the
 * z1 prior terms); gradients to x, mu and var. */
AvTensor *av_op_normal_logpdf(AvGraph *g, AvTensor *x, AvTensor *mu, AvTensor *var);
/* Scalar loss sum_n sum_t w_t * term_t[n] / n_global; w can be changed per step. At
 * most AV_MAX_LOSS_TERMS terms (more abort with a message). */
AvTensor *av_op_loss(AvGraph *g, int n_terms, AvTensor **terms, const float *w);
void av_loss_set_weight(AvGraph *g, int term, float w);

/* Runs the tape. forward fills every node for the current batch; backward computes
 * d loss / d everything into param_g (every entry written: assigned by the only
 * consumer where one op writes a gradient whole, else zeroed and accumulated). */
void av_graph_forward(AvGraph *g, const AvBatch *batch);
void av_graph_backward(AvGraph *g);
/* Backward from an arbitrary tensor y with d objective / d y = gy (tests): only the
 * nodes up to y's producer run. */
void av_graph_backward_from(AvGraph *g, AvTensor *y, const float *gy);
/* Zeroes the gradients that the nodes up to index `last` accumulate into (the rest
 * they assign); the first part of backward, exposed for per-op profiling. */
void av_graph_zero_grads(AvGraph *g, int last);
/* Forward only as far as the node that produces `until` (inference needs no loss). */
void av_graph_forward_until(AvGraph *g, const AvBatch *batch, const AvTensor *until);

static inline int64_t av_rows(const AvGraph *g, const AvTensor *t) {
    return t->batch ? g->n : t->rows;
}

#endif
