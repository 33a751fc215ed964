/* scVI: FCLayers encoders for z and the library, DecoderSCVI, NB-family likelihoods.
 * Shapes, names and constants follow model-spec.md sections 2 and 5. */
#include "models/scvi.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/rng.h"
#include "src/util.h"

void av_scvi_defaults(AvScviConfig *c) {
    memset(c, 0, sizeof *c);
    c->n_batch = 1;
    c->n_labels = 1;
    c->n_hidden = 128;
    c->n_latent = 10;
    c->n_layers = 1;
    c->dropout_rate = 0.1f;
    c->dispersion = AV_DISP_GENE;
    c->likelihood = AV_LIK_ZINB;
    c->use_observed_lib_size = 1;
    c->deeply_inject_covariates = 1;
    c->bn_encoder = c->bn_decoder = 1;
    c->log_variational = 1;
}

static const char *disp_names[] = {"gene", "gene-batch", "gene-label", "gene-cell"};
static const char *lik_names[] = {"zinb", "nb", "poisson"};

int av_scvi_parse_dispersion(const char *s, AvDispersion *d) {
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, disp_names[i])) return *d = (AvDispersion)i, 0;
    return -1;
}
int av_scvi_parse_likelihood(const char *s, AvLikelihood *l) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, lik_names[i])) return *l = (AvLikelihood)i, 0;
    return -1;
}
int av_scvi_parse_norm(const char *s, int *encoder, int *decoder) {
    if (!strcmp(s, "none")) return *encoder = 0, *decoder = 0, 0;
    if (!strcmp(s, "encoder")) return *encoder = 1, *decoder = 0, 0;
    if (!strcmp(s, "decoder")) return *encoder = 0, *decoder = 1, 0;
    if (!strcmp(s, "both")) return *encoder = 1, *decoder = 1, 0;
    return -1;
}
const char *av_scvi_norm_name(int encoder, int decoder) {
    return encoder && decoder ? "both" : encoder ? "encoder" : decoder ? "decoder" : "none";
}
const char *av_scvi_dispersion_name(AvDispersion d) {
    return disp_names[d];
}
const char *av_scvi_likelihood_name(AvLikelihood l) {
    return lik_names[l];
}

/* Limits of a configuration: those of the command line (n_latent <= 256, n_layers <= 8),
 * categories and genes within int32 codes and indices. */
#define MAX_CATEGORIES (1 << 24)

static int in_range(long long v, long long lo, long long hi, const char *name, char *err) {
    if (v >= lo && v <= hi) return 0;
    return av_err(err, "%s is %lld, expected %lld..%lld", name, v, lo, hi);
}

int av_scvi_check_config(const AvScviConfig *c, char *err) {
    if (in_range(c->n_input, 1, INT32_MAX, "n_input", err) ||
        in_range(c->n_batch, 1, MAX_CATEGORIES, "n_batch", err) ||
        in_range(c->n_labels, 1, MAX_CATEGORIES, "n_labels", err) ||
        in_range(c->n_hidden, 1, 1 << 16, "n_hidden", err) ||
        in_range(c->n_latent, 1, AV_MAX_LATENT, "n_latent", err) ||
        in_range(c->n_layers, 1, AV_MAX_LAYERS, "n_layers", err) ||
        in_range(c->n_cont, 0, AV_MAX_CATS, "n_continuous_cov", err) ||
        in_range(c->n_extra_cat, 0, AV_MAX_CATS - 2, "n_extra_categorical_cov", err))
        return -1;
    for (int k = 0; k < c->n_extra_cat; k++) {
        char name[64];
        snprintf(name, sizeof name, "n_cats_per_cov_%d", k);
        if (in_range(c->extra_cat_sizes[k], 1, MAX_CATEGORIES, name, err)) return -1;
    }
    if (!(c->dropout_rate >= 0 && c->dropout_rate < 1))
        return av_err(err, "dropout_rate is %g, expected 0 <= dropout_rate < 1", c->dropout_rate);
    if ((unsigned)c->dispersion > AV_DISP_GENE_CELL || (unsigned)c->likelihood > AV_LIK_POISSON)
        return av_err(err, "unknown dispersion or gene likelihood");
    const int flags[] = {c->latent_ln,         c->use_observed_lib_size,
                         c->encode_covariates, c->deeply_inject_covariates,
                         c->bn_encoder,        c->bn_decoder,
                         c->ln_encoder,        c->ln_decoder,
                         c->log_variational};
    for (size_t k = 0; k < sizeof flags / sizeof flags[0]; k++)
        if (flags[k] != 0 && flags[k] != 1) return av_err(err, "a boolean option is %d", flags[k]);
    return 0;
}

/* A parameter name from a format; the graph copies it. */
static const char *fmt_name(char *buf, size_t n, const char *fmt, const char *prefix, int layer,
                            const char *suffix) {
    snprintf(buf, n, fmt, prefix, layer, suffix);
    return buf;
}

/* Covariates a layer receives: columns of AvBatch.cat and their category counts. */
typedef struct {
    int n, col[AV_MAX_CATS], width[AV_MAX_CATS];
} Cats;

static int cats_width(const Cats *c) {
    int w = 0;
    for (int k = 0; k < c->n; k++) w += c->width[k] > 1 ? c->width[k] : 0;
    return w;
}

typedef struct {
    AvTensor *wt, *b, *bn_w, *bn_b, *bn_rm, *bn_rv;
} LayerParams;

static LayerParams declare_linear(AvGraph *g, const char *prefix, int64_t in, int64_t out) {
    if (strlen(prefix) > 200) abort(); /* names are fixed strings of this file */
    char w[300], b[300];               /* prefixes are under 256 characters */
    snprintf(w, sizeof w, "%s.weight", prefix);
    snprintf(b, sizeof b, "%s.bias", prefix);
    LayerParams p = {0};
    p.wt = av_param(g, w, in, out);
    p.wt->transposed = 1;
    p.b = av_param(g, b, 1, out);
    return p;
}

/* FCLayers: declares "<prefix>.fc_layers.Layer i.{0,1}.*". n_in_dense excludes the
 * sparse gene block (n_sparse) so the weight has n_sparse + n_in_dense + cats rows. */
typedef struct {
    int n_layers;
    LayerParams layer[AV_MAX_LAYERS];
    int64_t n_sparse, n_in_dense, n_hidden;
    Cats cats;
    int inject, bn, ln;
    float dropout;
} FC;

#define LAYER_FMT "%s.fc_layers.Layer %d.%s"

static void declare_fc(AvGraph *g, FC *fc, const char *prefix) {
    char n[256];
    for (int i = 0; i < fc->n_layers; i++) {
        int64_t in = i == 0 ? fc->n_sparse + fc->n_in_dense : fc->n_hidden;
        if (i == 0 || fc->inject) in += cats_width(&fc->cats);
        fc->layer[i] =
            declare_linear(g, fmt_name(n, sizeof n, LAYER_FMT, prefix, i, "0"), in, fc->n_hidden);
        if (!fc->bn) continue;
        fc->layer[i].bn_w =
            av_param(g, fmt_name(n, sizeof n, LAYER_FMT, prefix, i, "1.weight"), 1, fc->n_hidden);
        fc->layer[i].bn_b =
            av_param(g, fmt_name(n, sizeof n, LAYER_FMT, prefix, i, "1.bias"), 1, fc->n_hidden);
    }
}

static void declare_fc_buffers(AvGraph *g, FC *fc, const char *prefix) {
    char n[256];
    if (!fc->bn) return;
    for (int i = 0; i < fc->n_layers; i++) {
        fc->layer[i].bn_rm = av_buffer(
            g, fmt_name(n, sizeof n, LAYER_FMT, prefix, i, "1.running_mean"), 1, fc->n_hidden);
        fc->layer[i].bn_rv = av_buffer(
            g, fmt_name(n, sizeof n, LAYER_FMT, prefix, i, "1.running_var"), 1, fc->n_hidden);
        for (int64_t j = 0; j < fc->n_hidden; j++) fc->layer[i].bn_rv->v[j] = 1.0f;
    }
}

/* Linear -> BatchNorm -> LayerNorm -> ReLU -> Dropout, per layer. */
static AvTensor *build_fc(AvGraph *g, FC *fc, int sparse_in, AvTensor *x1, AvTensor *x2) {
    AvTensor *h = NULL;
    for (int i = 0; i < fc->n_layers; i++) {
        int inject = i == 0 || fc->inject;
        Cats none = {0};
        const Cats *c = inject ? &fc->cats : &none;
        LayerParams *p = &fc->layer[i];
        h = i == 0 ? av_op_linear(g, sparse_in, x1, x2, p->wt, p->b, c->n, c->col, c->width)
                   : av_op_linear(g, 0, h, NULL, p->wt, p->b, c->n, c->col, c->width);
        if (fc->bn) h = av_op_batchnorm(g, h, p->bn_w, p->bn_b, p->bn_rm, p->bn_rv);
        if (fc->ln) h = av_op_layernorm(g, h);
        h = av_op_relu(g, h);
        h = av_op_dropout(g, h, fc->dropout);
    }
    return h;
}

typedef struct {
    FC fc;
    LayerParams mean, var;
} Encoder;

static void declare_encoder(AvGraph *g, Encoder *e, const char *prefix, int n_out) {
    char p[128];
    snprintf(p, sizeof p, "%s.encoder", prefix);
    declare_fc(g, &e->fc, p);
    snprintf(p, sizeof p, "%s.mean_encoder", prefix);
    e->mean = declare_linear(g, p, e->fc.n_hidden, n_out);
    snprintf(p, sizeof p, "%s.var_encoder", prefix);
    e->var = declare_linear(g, p, e->fc.n_hidden, n_out);
}

/* Encoder (model-spec 2.2): q = FC(x); mean = Linear(q); var = exp(Linear(q)) + 1e-4;
 * returns the reparameterised sample. */
static AvTensor *build_gaussian_head(AvGraph *g, Encoder *e, int sparse_mode, AvTensor *cont,
                                     AvTensor **mean, AvTensor **var) {
    AvTensor *q = build_fc(g, &e->fc, sparse_mode, cont, NULL);
    *mean = av_op_linear(g, 0, q, NULL, e->mean.wt, e->mean.b, 0, NULL, NULL);
    *var = av_op_exp_eps(g, av_op_linear(g, 0, q, NULL, e->var.wt, e->var.b, 0, NULL, NULL), 1e-4f);
    return av_op_reparam(g, *mean, *var);
}

static void init_uniform(AvTensor *t, int64_t fan_in, AvRngSeq *r) {
    float bound = 1.0f / sqrtf((float)fan_in);
    for (int64_t k = 0; k < t->rows * t->cols; k++)
        t->v[k] = (float)((2.0 * av_seq_uniform(r) - 1.0) * bound);
}

/* PyTorch's defaults: Linear weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
 * BatchNorm weight 1 bias 0, px_r ~ N(0, 1). */
static void init_weights(AvScvi *m, uint64_t seed) {
    AvRngSeq r;
    av_seq_init(&r, seed, AV_STREAM_INIT, 0);
    AvTensor *last_w = NULL;
    for (int i = 0; i < m->g.n_params; i++) {
        AvTensor *t = m->g.params[i];
        if (t->transposed) {
            init_uniform(t, t->rows, &r);
            last_w = t;
        } else if (strstr(t->name, ".1.weight")) {
            for (int64_t k = 0; k < t->cols; k++) t->v[k] = 1.0f;
        } else if (strstr(t->name, ".1.bias")) {
            memset(t->v, 0, sizeof(float) * (size_t)t->cols);
        } else if (!strcmp(t->name, "px_r")) {
            for (int64_t k = 0; k < t->rows * t->cols; k++) t->v[k] = (float)av_seq_normal(&r);
        } else if (last_w) { /* a Linear bias follows its weight */
            init_uniform(t, last_w->rows, &r);
        }
    }
}

/* The parameters of a configuration, declared in scvi-tools' state-dict order. */
typedef struct {
    Encoder ez, el;
    FC dec;
    LayerParams scale, rdec, drop;
    AvTensor *px_r;
} Declared;

static void declare_params(AvGraph *g, const AvScviConfig *c, Declared *d) {
    int64_t G = c->n_input, H = c->n_hidden, L = c->n_latent;
    Cats dec_cats = {0};
    dec_cats.col[dec_cats.n] = AV_CAT_BATCH;
    dec_cats.width[dec_cats.n++] = c->n_batch;
    for (int k = 0; k < c->n_extra_cat; k++) {
        dec_cats.col[dec_cats.n] = AV_CAT_EXTRA + k;
        dec_cats.width[dec_cats.n++] = c->extra_cat_sizes[k];
    }
    Cats enc_cats = c->encode_covariates ? dec_cats : (Cats){0};
    int64_t enc_cont = c->encode_covariates ? c->n_cont : 0;

    d->px_r = NULL;
    if (c->dispersion == AV_DISP_GENE) d->px_r = av_param(g, "px_r", 1, G);
    if (c->dispersion == AV_DISP_GENE_BATCH) d->px_r = av_param(g, "px_r", G, c->n_batch);
    if (c->dispersion == AV_DISP_GENE_LABEL) d->px_r = av_param(g, "px_r", G, c->n_labels);

    /* The z and library encoders share everything but depth and output width (the
     * library encoder always has one layer). */
    FC enc = {c->n_layers,
              {{0}},
              G,
              enc_cont,
              H,
              enc_cats,
              c->deeply_inject_covariates,
              c->bn_encoder,
              c->ln_encoder,
              c->dropout_rate};
    d->ez = (Encoder){.fc = enc};
    d->el = (Encoder){.fc = enc};
    d->el.fc.n_layers = 1;
    declare_encoder(g, &d->ez, "z_encoder", (int)L);
    declare_encoder(g, &d->el, "l_encoder", 1);
    FC dec = {
        c->n_layers,   {{0}},         0,   L + c->n_cont, H, dec_cats, c->deeply_inject_covariates,
        c->bn_decoder, c->ln_decoder, 0.0f};
    d->dec = dec;
    declare_fc(g, &d->dec, "decoder.px_decoder");
    d->scale = declare_linear(g, "decoder.px_scale_decoder.0", H, G);
    d->rdec = declare_linear(g, "decoder.px_r_decoder", H, G);
    d->drop = declare_linear(g, "decoder.px_dropout_decoder", H, G);
}

void av_scvi_declare_params(AvGraph *g, const AvScviConfig *c) {
    av_graph_init(g, 1, 0);
    Declared d;
    declare_params(g, c, &d);
}

void av_scvi_build(AvScvi *m, const AvScviConfig *c, int64_t max_batch, uint64_t seed) {
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    AvGraph *g = &m->g;
    av_graph_init(g, max_batch, seed);
    Declared d;
    declare_params(g, c, &d);
    av_graph_alloc_params(g);
    m->px_r = d.px_r;
    Encoder ez = d.ez, el = d.el;
    FC dec = d.dec;
    LayerParams scale = d.scale, rdec = d.rdec, drop = d.drop;
    int64_t enc_cont = c->encode_covariates ? c->n_cont : 0;

    declare_fc_buffers(g, &ez.fc, "z_encoder.encoder");
    declare_fc_buffers(g, &el.fc, "l_encoder.encoder");
    declare_fc_buffers(g, &dec, "decoder.px_decoder");
    if (!c->use_observed_lib_size) {
        m->lib_means = av_buffer(g, "library_log_means", 1, c->n_batch);
        m->lib_vars = av_buffer(g, "library_log_vars", 1, c->n_batch);
        for (int b = 0; b < c->n_batch; b++) m->lib_vars->v[b] = 1.0f;
    }
    init_weights(m, seed);

    /* Inference: z encoder on log1p(counts) (+ continuous covariates if encoded). */
    AvTensor *cont = c->n_cont ? av_op_cont_input(g, c->n_cont) : NULL;
    int sparse_mode = c->log_variational ? 1 : 2;
    m->z = build_gaussian_head(g, &ez, sparse_mode, enc_cont ? cont : NULL, &m->qz_m, &m->qz_v);
    if (c->latent_ln) m->z = av_op_softmax(g, m->z);
    if (c->use_observed_lib_size)
        m->library = av_op_log_library(g);
    else
        m->library =
            build_gaussian_head(g, &el, sparse_mode, enc_cont ? cont : NULL, &m->ql_m, &m->ql_v);

    /* Generative: decoder on [z, cont] with the batch and covariates injected. */
    AvTensor *h = build_fc(g, &dec, 0, m->z, cont);
    m->rho = av_op_softmax(g, av_op_linear(g, 0, h, NULL, scale.wt, scale.b, 0, NULL, NULL));
    AvTensor *pi = NULL, *theta = m->px_r;
    if (c->likelihood == AV_LIK_ZINB)
        pi = av_op_linear(g, 0, h, NULL, drop.wt, drop.b, 0, NULL, NULL);
    if (c->dispersion == AV_DISP_GENE_CELL && c->likelihood != AV_LIK_POISSON)
        theta = av_op_linear(g, 0, h, NULL, rdec.wt, rdec.b, 0, NULL, NULL);
    int code_col = c->dispersion == AV_DISP_GENE_LABEL ? AV_CAT_LABEL : AV_CAT_BATCH;
    m->rec =
        av_op_count_nll(g, m->rho, m->library, theta, pi, c->likelihood, c->dispersion, code_col);
    m->kl_z = av_op_kl_normal(g, m->qz_m, m->qz_v, NULL, NULL, 0);
    int n_terms = 2;
    AvTensor *terms[3] = {m->rec, m->kl_z, NULL};
    float w[3] = {1.0f, 1.0f, 1.0f};
    if (!c->use_observed_lib_size) {
        m->kl_l = av_op_kl_normal(g, m->ql_m, m->ql_v, m->lib_means, m->lib_vars, AV_CAT_BATCH);
        terms[n_terms++] = m->kl_l;
    }
    m->loss = av_op_loss(g, n_terms, terms, w);
    av_graph_pack_params(g);
}

void av_scvi_free(AvScvi *m) {
    av_graph_free(&m->g);
}

/* The KL weight scales the z term only; scVI does not warm up the library KL. */
void av_scvi_set_kl_weight(AvScvi *m, float w) {
    av_loss_set_weight(&m->g, 1, w);
}

void av_scvi_set_library_prior(AvScvi *m, const double *mean, const double *var) {
    if (!m->lib_means) return;
    for (int b = 0; b < m->cfg.n_batch; b++) {
        m->lib_means->v[b] = (float)mean[b];
        m->lib_vars->v[b] = (float)var[b];
    }
}
