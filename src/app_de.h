/* Ranks and files around the DE maths (src/de.h) and the posterior outputs: groups read
 * from obs, posterior draws of normalized expression pooled over ranks, raw statistics
 * reduced over ranks, and eval-mode passes over a rank's cells. Collective functions are
 * called on every rank. */
#ifndef AV_APP_DE_H
#define AV_APP_DE_H
#include <stdint.h>

#include "models/scvi.h"
#include "src/app.h"

/* Collective: rank 0 reads obs column `key` of path as a categorical (pandas'
 * astype("category"): a categorical keeps its categories, others get sorted unique
 * values) and broadcasts the codes (n_obs, -1 = missing) and categories. */
int av_de_read_groups(const char *path, const char *layer, const char *key, int64_t n_obs,
                      int32_t **codes, char ***categories, int64_t *n_categories, char *err);

typedef struct {
    int64_t n_samples_overall; /* M: 5000 */
    int batch_correction;      /* decode every cell in each batch category in turn */
    uint64_t seed;
    int batch_size; /* cells per forward pass (<= the model's max batch) */
} AvDeSampling;

/* Collective. Pooled posterior draws of rho for the cells whose global index has
 * member[c] set (n_member of them, all ranks pass the same mask), as
 * get_normalized_expression(n_samples_overall=M) does: S = M // n + 1 posterior samples
 * per cell, then M (cell, sample) pairs drawn uniformly with replacement. Draw i is a pure
 * function of (seed, key, batch tag, i), so the result is the same for any number of
 * ranks: each rank decodes the draws of its own cells and the [M, G] array is summed over
 * ranks. With batch_correction there are B blocks of max(int(M / B), 2) draws, block b
 * decoded in batch b (in category order). Returns the array on every rank; *n_rows and
 * (optional) *rows_per_block receive the sizes. */
float *av_de_sample_rho(AvScvi *m, const AvTrainData *d, const uint8_t *member, int64_t n_member,
                        const AvDeSampling *o, uint32_t key, int64_t *n_rows,
                        int64_t *rows_per_block);

/* Collective. Raw statistics of the registered counts over the member cells (8.8):
 * mean count, fraction of non-zero counts and mean of counts scaled to 1e4 per cell.
 * Sums are reduced exactly (integers, and a fixed-point sum for the scaled counts), so
 * they do not depend on the number of ranks. Arrays of G. */
void av_de_raw_stats(const AvTrainData *d, const uint8_t *member, int64_t n_member,
                     double *raw_mean, double *nonzero, double *norm_mean);

/* Collective: rank 0 writes a new .h5ad `output` with obs and var of `input` and n dense
 * float32 layers (n_obs x n_vars each, present on rank 0). */
int av_de_write_layers(const char *input, const char *layer, const char *output, int64_t n_obs,
                       int64_t n_vars, int n, const char *const *names, const float *const *data,
                       char *err);

/* Fills local rows rows[0..n) (av_minibatch_fill, n_global = n); transform_batch >= 0
 * replaces every batch code. */
const AvBatch *av_de_batch_fill(AvMinibatch *mb, const AvTrainData *d, const int64_t *rows,
                                int64_t n, int transform_batch);

#endif
