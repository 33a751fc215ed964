/* Adding per-gene columns to the var dataframe of an .h5ad that exists, and copying obs
 * between files: what `atlasvi hvg` needs beyond io/output.h. Rank 0 only; no atomicity
 * here: callers write into a temporary file and rename it into place. */
#ifndef AV_IO_OUT_VAR_H
#define AV_IO_OUT_VAR_H
#include <stdint.h>

typedef enum { AV_VARCOL_F64, AV_VARCOL_F32, AV_VARCOL_I64, AV_VARCOL_BOOL } AvVarColType;

/* One column of n values: double, float, int64_t, or uint8_t (0/1) for a bool column. */
typedef struct {
    const char *name;
    AvVarColType type;
    const void *data;
} AvVarColumn;

/* Adds (or replaces) columns of /var of the .h5ad at path (a modern dataframe whose index
 * has n entries) with anndata's array encoding, and appends them to column-order. */
int av_h5ad_add_var_columns(const char *path, const AvVarColumn *cols, int n_cols, int64_t n,
                            char *err);

/* Replaces /obs of path by a copy of /obs of src when src is an .h5ad whose obs is a modern
 * dataframe of the same length; returns 0 (copied), 1 (left as it is) or -1 (error). */
int av_h5ad_copy_obs(const char *path, const char *src, char *err);

/* Copies every root member of the .h5ad src that path lacks (X, layers, obsm, varm, obsp,
 * uns, raw, ...) into path, as they are. Returns 0, 1 when src is not HDF5 (nothing done),
 * or -1. */
int av_h5ad_copy_missing(const char *path, const char *src, char *err);

#endif
