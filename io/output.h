/* Writing results as .h5ad that anndata.read_h5ad opens. Writes never leave a
 * half-written file: new files are written to "<path>.tmp" then renamed; in-place
 * writes go to a temporary link that is moved over the old one. */
#ifndef AV_IO_OUTPUT_H
#define AV_IO_OUTPUT_H
#include <stdint.h>

#include "io/input.h"
#include "src/data.h"

typedef struct AvWriter AvWriter;

/* Starts a new .h5ad holding the obs and var of `in` (copied as they are when `in`
 * is a modern .h5ad; rebuilt from names and the given columns otherwise). No X. */
AvWriter *av_writer_create(const char *path, const AvInput *in, char *err);
/* A dense float32 per-cell matrix under obsm/<key> (n_obs x k). */
int av_writer_obsm(AvWriter *w, const char *key, const float *data, int64_t n, int64_t k, char *err);
/* A dense float32 layer under layers/<name> (n_obs x n_vars). */
int av_writer_layer(AvWriter *w, const char *name, const float *data, int64_t n, int64_t g,
                    char *err);
/* Closes and renames the temporary file into place; frees w either way. */
int av_writer_commit(AvWriter *w, char *err);
void av_writer_abort(AvWriter *w); /* removes the temporary file */

/* Writes obsm/<key> into an existing .h5ad atomically (temporary link, then move). */
int av_write_obsm_inplace(const char *path, const char *key, const float *data, int64_t n,
                          int64_t k, char *err);

/* Streaming writer of a new .h5ad with CSR X, used by `atlasvi simulate` so that a
 * 10M-cell file never sits in memory. Rows are appended in order. */
typedef struct AvCsrWriter AvCsrWriter;
AvCsrWriter *av_csr_writer_create(const char *path, int64_t n_vars, char **var_names,
                                  char *err);
int av_csr_writer_append(AvCsrWriter *w, const AvCsr *rows, char *err);
/* Writes obs (index = obs_names, plus columns) and renames into place. */
int av_csr_writer_finish(AvCsrWriter *w, char **obs_names, const AvColumn *cols, int n_cols,
                         char *err);

#endif
