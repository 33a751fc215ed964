/* scVI (scvi.model.SCVI / scvi.module.VAE): its options and defaults, parameters under
 * their scvi-tools state-dict names, and its loss as a graph. A model never knows how
 * many ranks there are. */
#ifndef AV_MODELS_SCVI_H
#define AV_MODELS_SCVI_H
#include <stdint.h>

#include "src/graph.h"

/* Columns of AvBatch.cat: the batch code, the label code, then extra categorical
 * covariates in registration order. */
enum { AV_CAT_BATCH = 0, AV_CAT_LABEL = 1, AV_CAT_EXTRA = 2 };

/* The largest latent and depth a model may have (the command line's limits). */
#define AV_MAX_LATENT 256
#define AV_MAX_LAYERS 8

typedef struct {
    int64_t n_input; /* genes */
    int n_batch, n_labels;
    int n_hidden, n_latent, n_layers;
    float dropout_rate;
    AvDispersion dispersion;
    AvLikelihood likelihood;
    int latent_ln; /* latent_distribution "ln" */
    int use_observed_lib_size;
    int encode_covariates, deeply_inject_covariates;
    int bn_encoder, bn_decoder, ln_encoder, ln_decoder;
    int log_variational;
    int n_cont;
    int n_extra_cat;
    int extra_cat_sizes[AV_MAX_CATS];
} AvScviConfig;

typedef struct {
    AvScviConfig cfg;
    AvGraph g;
    AvTensor *qz_m, *qz_v, *z, *ql_m, *ql_v, *library, *rho, *rec, *kl_z, *kl_l, *loss;
    AvTensor *px_r, *lib_means, *lib_vars;
} AvScvi;

/* scvi.model.SCVI's defaults: n_hidden 128, n_latent 10, n_layers 1, dropout 0.1,
 * dispersion gene, zinb, normal latent, observed library, batch norm in encoder and
 * decoder, no layer norm, encode_covariates off, deeply_inject_covariates on. */
void av_scvi_defaults(AvScviConfig *c);
/* Parses the scvi-tools option spellings ("gene-batch", "zinb", "both", ...). */
int av_scvi_parse_dispersion(const char *s, AvDispersion *d);
int av_scvi_parse_likelihood(const char *s, AvLikelihood *l);
int av_scvi_parse_norm(const char *s, int *encoder, int *decoder); /* none|encoder|decoder|both */
const char *av_scvi_norm_name(int encoder, int decoder);           /* the inverse of parse_norm */
const char *av_scvi_dispersion_name(AvDispersion d);
const char *av_scvi_likelihood_name(AvLikelihood l);

/* Builds the parameters and the training graph for minibatches of up to max_batch
 * cells, and initialises weights as PyTorch does (same distributions, not the same
 * numbers). */
void av_scvi_build(AvScvi *m, const AvScviConfig *c, int64_t max_batch, uint64_t seed);
void av_scvi_free(AvScvi *m);
/* Checks every field of a configuration read from a file against its range (sizes
 * positive and within the limits above, flags 0 or 1); err names the field. */
int av_scvi_check_config(const AvScviConfig *c, char *err);
/* Declares into g (initialised here; av_graph_free it) the parameters c implies, names
 * and shapes only, nothing allocated: for checking a file's shapes before av_scvi_build. */
void av_scvi_declare_params(AvGraph *g, const AvScviConfig *c);
void av_scvi_set_kl_weight(AvScvi *m, float w);

/* Per-batch prior of the latent library: mean and population variance of log total
 * counts of the cells of each batch (scvi-tools' library_log_means / _vars). */
void av_scvi_set_library_prior(AvScvi *m, const double *mean, const double *var);

#endif
