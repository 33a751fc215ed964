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
