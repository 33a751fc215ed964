/* Reading count matrices and cell metadata: .h5ad, 10x HDF5 (v2, v3), Matrix Market
 * folders and loom. Only io/ touches HDF5. Every rank may open the same file read-only
 * and read its own block of rows; nothing here knows about ranks. */
#ifndef AV_IO_INPUT_H
#define AV_IO_INPUT_H
#include <stdint.h>

#include "src/data.h"

typedef enum { AV_FMT_H5AD, AV_FMT_10X_H5, AV_FMT_MTX_DIR, AV_FMT_LOOM } AvFormat;

typedef struct AvInputImpl AvInputImpl;

typedef struct {
    char *path;
    AvFormat format;
    char *matrix_name; /* what is read: "X", "layers/counts", "raw/X", "matrix", ... */
    int64_t n_obs, n_vars;
    char **obs_names; /* n_obs; NULL until av_input_read_names */
    char **var_names; /* n_vars */
    int n_obs_columns;
    char **obs_columns; /* names of obs columns (h5ad obs, loom col_attrs, ...) */
    AvInputImpl *impl;
} AvInput;

/* Opens a file or Matrix Market folder, detects its format and reads the shape and
 * the obs column names. layer: NULL (X), a layer name, or "raw" (raw/X with raw/var).
 * Fails with one line naming the file, the dataset and what was expected. */
int av_input_open(AvInput *in, const char *path, const char *layer, char *err);
void av_input_close(AvInput *in);

/* Reads obs_names and var_names (metadata-sized; rank 0 reads, then broadcasts). */
int av_input_read_names(AvInput *in, char *err);

/* Row pointer of the whole matrix as int64 (n_obs + 1 entries): the non-zeros per
 * cell, used to plan shards balanced by non-zeros. For dense storage it is filled
 * from a scan (or n_vars per row). */
int av_input_read_indptr(AvInput *in, int64_t *indptr, char *err);

/* Reads cells [row_lo, row_hi) as CSR (indptr rebased to 0, indices sorted, float32
 * values). Dense, CSR, CSC, 10x CSC-as-CSR and loom genes-x-cells all end up here. */
int av_input_read_rows(AvInput *in, int64_t row_lo, int64_t row_hi, AvCsr *out, char *err);

/* Reads one obs column by name (categorical: modern group or 0.7 legacy codes with an
 * object-reference `categories` attribute; numeric; strings). */
int av_input_read_obs_column(AvInput *in, const char *key, AvColumn *out, char *err);

/* Registers the LZF decoder (filter id 32000) with HDF5. Idempotent; called by open. */
int av_register_lzf(void);

/* ---- Additions (io/ readers) ------------------------------------------------------
 * `layer` per format: .h5ad: NULL or "X" (X), "raw" (raw/X + raw/var), else
 * layers/<name>. 10x v3 HDF5 and Matrix Market with a feature_type column: the feature
 * type to keep (NULL = "Gene Expression", like scanpy's gex_only; "all" keeps every
 * feature). 10x v2 HDF5: the genome group (required when there are several). loom: NULL
 * or "matrix" (/matrix), else layers/<name>.
 *
 * av_input_read_indptr counts stored entries per row (explicit zeros included) for
 * CSR/CSC/10x files and non-zeros for dense ones: use it to plan shards; read_rows
 * drops explicit zeros, so its nnz can be slightly lower.
 *
 * HDF5 (Debian's parallel build) is not thread-safe: call these from one thread at a
 * time per process (a prefetch thread must not overlap with other reads). */

const char *av_format_name(AvFormat f); /* "h5ad", "10x-h5", "mtx", "loom" */

/* Reads one var column (h5ad var or raw/var, loom row_attrs, 10x/mtx gene_ids,
 * feature_types, genome) of length n_vars. */
int av_input_read_var_column(AvInput *in, const char *key, AvColumn *out, char *err);

/* For a 10x or Matrix Market file without feature types (every feature is read as a
 * gene): how many var names (read) look like antibody-derived tags (TotalSeq, ADT,
 * _prot), with the first in *example; 0 otherwise. */
int64_t av_input_untyped_antibodies(const AvInput *in, const char **example);

/* Names of the var columns / of the selectable layers (h5ad layers plus "raw" when
 * raw/X exists; loom layers; 10x feature types or v2 genomes). The arrays belong to in. */
int av_input_var_columns(const AvInput *in, char ***names);
int av_input_layers(const AvInput *in, char ***names);

/* Stored value type of the matrix ("float32", "int64", ...) and its layout ("csr",
 * "csc", "dense", "dense genes x cells", ...). Strings belong to in. */
const char *av_input_dtype(const AvInput *in);
const char *av_input_storage(const AvInput *in);

/* Turns a STRING or NUMERIC column into a CATEGORICAL one with sorted unique categories
 * (numbers printed as "0", "1", "2.5"; NaN becomes code -1), as pandas' astype("category")
 * does. Categoricals are left as they are. */
int av_column_to_categorical(AvColumn *c);

#endif
