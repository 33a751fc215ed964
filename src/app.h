/* Where the rooms meet: registering a file as scvi-tools' setup_anndata does, reading
 * this rank's shard, and the model file. Used by the subcommands and by tests. */
#ifndef AV_APP_H
#define AV_APP_H
#include <stdint.h>

#include "models/scvi.h"
#include "src/train.h"

/* The setup registry: which matrix and keys, and the category mappings. */
typedef struct {
    char *layer;      /* NULL: X */
    char *batch_key;  /* NULL: one batch */
    char *labels_key; /* NULL: one label */
    int n_extra_cat;
    char *cat_keys[AV_MAX_CATS];
    int n_cont;
    char *cont_keys[AV_MAX_CATS];
    /* category lists: batch, labels, then each extra categorical covariate */
    int64_t n_categories[2 + AV_MAX_CATS];
    char **categories[2 + AV_MAX_CATS];
    int64_t n_vars;
    char **var_names;
    int64_t n_obs; /* cells registered (scvi-tools' summary stat n_cells) */
} AvSetup;

void av_setup_free(AvSetup *s);
/* Copies the keys (layer, batch, labels, covariates) of src into an empty dst. */
void av_setup_copy_keys(AvSetup *dst, const AvSetup *src);

/* Collective. Opens path on every rank, registers it (rank 0 reads the metadata and
 * broadcasts it), plans shards balanced by non-zeros and reads this rank's cells into d,
 * checking the counts. With `reference` (a saved model's registry) the categories and
 * genes are mapped onto the reference's; unknown categories or genes are errors.
 * Non-integer counts give one warning; negative, NaN/Inf counts and cells with zero
 * counts are errors. Every rank returns the same status; the message is printed once
 * by the caller through dist. */
int av_setup_load(AvSetup *s, const char *path, const AvSetup *reference, AvTrainData *d,
                  char *err);
void av_train_data_free(AvTrainData *d);
/* As av_setup_load, but no counts are read: d holds this rank's block (row0, x.n_rows,
 * x.n_cols, codes, covariates) for a trainer that streams the counts (src/app_stream.c). */
int av_setup_load_meta(AvSetup *s, const char *path, const AvSetup *reference, AvTrainData *d,
                       char *err);
/* Checks the counts of rows read at global row row0: negative, NaN/Inf values and empty
 * cells are errors (one line naming path and cell); non-integers are counted. */
int av_check_counts(const AvCsr *x, int64_t row0, const char *path, int64_t *non_integer,
                    char *err);

/* The communicator of this process (dist/ behind the trainer's interface). */
AvComm av_comm_world(void);

/* Model file: weights under their scvi-tools names in PyTorch layout, buffers, Adam
 * state, the setup registry, training options and history. Saved by rank 0. */
int av_model_save(const char *path, const AvScvi *m, const AvSetup *s, const AvOptState *st,
                  const AvHistory *h, char *err);
/* Loads a model file: builds the model (minibatches up to max_batch) and fills setup,
 * optimiser state (allocated here) and history; each may be NULL. */
int av_model_load(const char *path, AvScvi *m, AvSetup *s, AvOptState *st, AvHistory *h,
                  int64_t max_batch, char *err);

/* Gathers a local row block to rank 0 (returned there, NULL elsewhere). */
float *av_gather_rows(const float *local, int64_t local_rows, int64_t cols, int64_t n_obs);

/* What to write, on rank 0: obsm and/or a dense layer into a new file `output` (obs and
 * var copied from `input`) when it is set, and, with inplace, obsm into `input` itself. */
typedef struct {
    const char *input, *layer, *output;
    int inplace;
    int64_t n_obs, n_vars;
    const char *obsm_key;
    const float *obsm;
    int64_t obsm_cols;
    const char *layer_name;
    const float *layer_data;
} AvOutputSpec;

/* Collective: rank 0 writes, every rank returns its status (message printed once). */
int av_write_results(const AvOutputSpec *o, char *err);

#endif
