/* In-memory data shared by io/ (which fills it) and the trainer (which reads it).
 * No HDF5 or MPI types here. */
#ifndef AV_DATA_H
#define AV_DATA_H
#include <stdint.h>

/* Cells x features, compressed sparse rows. indptr starts at 0 (a shard is rebased),
 * column indices are sorted and unique within each row, values are float32. */
typedef struct {
    int64_t n_rows, n_cols;
    int64_t *indptr; /* n_rows + 1 */
    int32_t *indices;
    float *data;
} AvCsr;

void av_csr_free(AvCsr *m);
/* Fills m's indptr/indices/data from nnz (row, col, value) triplets by a counting sort on
 * the row (stable: entries keep their order within a row). m->n_rows must be set. */
void av_csr_from_triplets(AvCsr *m, int64_t nnz, const int64_t *row, const int64_t *col,
                          const float *val);
int64_t av_csr_nnz(const AvCsr *m);

typedef enum { AV_COL_CATEGORICAL, AV_COL_NUMERIC, AV_COL_STRING } AvColKind;

/* One obs (or var) column. Categoricals keep the file's category order; code -1 = missing. */
typedef struct {
    char *name;
    AvColKind kind;
    int64_t n;
    int32_t *codes; /* categorical */
    int32_t n_categories;
    char **categories;
    double *values; /* numeric */
    char **strings; /* string */
} AvColumn;

void av_column_free(AvColumn *c);

#endif
