#include "src/data.h"

#include <stdlib.h>
#include <string.h>

#include "src/util.h"

void av_csr_free(AvCsr *m) {
    free(m->indptr);
    free(m->indices);
    free(m->data);
    memset(m, 0, sizeof *m);
}

void av_csr_from_triplets(AvCsr *m, int64_t nnz, const int64_t *row, const int64_t *col,
                          const float *val) {
    int64_t nr = m->n_rows;
    m->indptr = av_calloc((size_t)(nr + 1), sizeof(int64_t));
    m->indices = av_malloc((size_t)(nnz ? nnz : 1) * sizeof(int32_t));
    m->data = av_malloc((size_t)(nnz ? nnz : 1) * sizeof(float));
    for (int64_t k = 0; k < nnz; k++) m->indptr[row[k] + 1]++;
    for (int64_t r = 0; r < nr; r++) m->indptr[r + 1] += m->indptr[r];
    int64_t *pos = av_malloc((size_t)(nr + 1) * sizeof *pos);
    memcpy(pos, m->indptr, (size_t)(nr + 1) * sizeof *pos);
    for (int64_t k = 0; k < nnz; k++) {
        int64_t p = pos[row[k]]++;
        m->indices[p] = (int32_t)col[k];
        m->data[p] = val[k];
    }
    free(pos);
}

int64_t av_csr_nnz(const AvCsr *m) {
    return m->indptr ? m->indptr[m->n_rows] : 0;
}

void av_column_free(AvColumn *c) {
    free(c->name);
    free(c->codes);
    av_free_strings(c->categories, c->n_categories);
    free(c->values);
    av_free_strings(c->strings, c->strings ? c->n : 0);
    memset(c, 0, sizeof *c);
}
