/* Writing results as .h5ad that anndata.read_h5ad opens. Writes never leave a
 * half-written file: new files are written to a unique temporary (io/replace.h) then
 * renamed, or copied into an output that is a device or FIFO; in-place
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
int av_writer_obsm(AvWriter *w, const char *key, const float *data, int64_t n, int64_t k,
                   char *err);
/* A dense float32 layer under layers/<name> (n_obs x n_vars). */
int av_writer_layer(AvWriter *w, const char *name, const float *data, int64_t n, int64_t g,
                    char *err);
/* Closes and renames the temporary file into place; frees w either way. */
int av_writer_commit(AvWriter *w, char *err);
void av_writer_abort(AvWriter *w); /* removes the temporary file */
/* As av_writer_create, adding obs columns (e.g. clusters): appended to the copied obs of
 * a modern .h5ad (a column of the same name is replaced), or written into the rebuilt obs
 * otherwise. Refuses to write over the source file itself. */
AvWriter *av_writer_create_cols(const char *path, const AvInput *in, const AvColumn *cols,
                                int n_cols, char *err);

/* Whether key can name an obsm entry or a layer: not empty, no '/', not starting with '.'. */
int av_key_ok(const char *key);

/* Writes obsm/<key> into an existing .h5ad atomically (temporary link, then move). */
int av_write_obsm_inplace(const char *path, const char *key, const float *data, int64_t n,
                          int64_t k, char *err);

/* Streaming writer of a new .h5ad with CSR X, used by `atlasvi simulate` so that a
 * 10M-cell file never sits in memory. Rows are appended in order. */
typedef struct AvCsrWriter AvCsrWriter;
/* var_names NULL writes "gene_0", "gene_1", ... X components are chunked and
 * gzip-compressed at level 1 (data f32, indices i32, indptr i64). */
AvCsrWriter *av_csr_writer_create(const char *path, int64_t n_vars, char **var_names, char *err);
/* The same with a chosen gzip level (0 = uncompressed). */
AvCsrWriter *av_csr_writer_create_opts(const char *path, int64_t n_vars, char **var_names,
                                       int gzip_level, char *err);
/* Rows must have indptr[0] == 0 and sorted, in-range column indices (checked). */
int av_csr_writer_append(AvCsrWriter *w, const AvCsr *rows, char *err);
/* Writes obs (index = obs_names, plus columns) and renames into place; frees w either
 * way (the temporary file is removed on failure). obs_names NULL writes "cell_0",
 * "cell_1", ... in slices, so the names of 10M cells never sit in memory. */
int av_csr_writer_finish(AvCsrWriter *w, char **obs_names, const AvColumn *cols, int n_cols,
                         char *err);
/* Gives up: closes and removes the temporary file, frees w. */
void av_csr_writer_abort(AvCsrWriter *w);
int64_t av_csr_writer_rows(const AvCsrWriter *w);
int64_t av_csr_writer_nnz(const AvCsrWriter *w);

#endif
