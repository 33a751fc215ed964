/* Private state of an AvInput, shared by the reader files in io/. */
#ifndef AV_IO_INPUT_IMPL_H
#define AV_IO_INPUT_IMPL_H
#include <hdf5.h>
#include <stdint.h>

#include "io/input.h"

typedef enum {
    AV_ST_CSR,     /* CSR cells x genes (h5ad csr_matrix, 10x CSC genes x cells) */
    AV_ST_CSC,     /* h5ad csc_matrix: rows need a full scan */
    AV_ST_DENSE,   /* 2-D cells x genes */
    AV_ST_DENSE_T, /* 2-D genes x cells (loom) */
    AV_ST_MEM,     /* parsed into memory (Matrix Market) */
    AV_ST_NONE     /* an .h5ad without X (e.g. atlasvi's own outputs): metadata only */
} AvStorage;

struct AvInputImpl {
    hid_t file;
    AvStorage st;
    hid_t d_data, d_indices, d_indptr, d_dense;
    char *mpath;         /* matrix path in the file, for messages ("/X", "/matrix") */
    char dtype[32];      /* stored value type ("float32", "int32", ...) */
    char *no_matrix;     /* AV_ST_NONE: the error to give when the matrix is read */
    int64_t n_file_cols; /* CSR: columns stored in the file (10x: all features) */
    int64_t n_major;     /* CSC: columns of the file (indptr length - 1) */
    int64_t nnz_stored;  /* stored entries (explicit zeros included) */
    int32_t *col_map;    /* file column -> kept column or -1; NULL keeps all */
    int csc_logged;
    int untyped_features; /* 10x / Matrix Market without feature types: all read as genes */

    /* Metadata locations (HDF5 formats); NULL when absent. */
    char *obs_grp, *obs_index; /* obs dataframe group / dataset with the obs names */
    char *var_grp, *var_index;
    char *tenx_grp; /* 10x: "matrix" or the v2 genome group */

    /* Names and var columns kept in memory (10x, mtx), moved out by read_names. */
    char **mem_obs_names, **mem_var_names;
    int n_var_columns;
    char **var_columns;
    char ***mem_var_cols; /* [n_var_columns][n_vars] strings, when held in memory */

    /* Layers / selectable parts: h5ad layers (+ "raw"), loom layers, 10x feature types. */
    int n_layers;
    char **layers;

    /* Matrix Market: the whole matrix (rows = cells). */
    AvCsr mem;
};

/* mtx.c */
int av_mtx_open(AvInput *in, const char *dir, const char *layer, char *err);

#endif
