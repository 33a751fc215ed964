#include "dist/dist.h"

/* Boundary r is the first row whose starting non-zero offset reaches r * nnz / P, so
 * every part holds about nnz / P non-zeros; all arithmetic is 64-bit. */
void dist_plan_shards(const int64_t *indptr, int64_t n_rows, int n_parts, int64_t *bounds) {
    int64_t nnz = indptr[n_rows];
    bounds[0] = 0;
    int64_t row = 0;
    for (int r = 1; r < n_parts; r++) {
        /* target = r * nnz / P without overflow for nnz near 2^62 */
        int64_t target = (nnz / n_parts) * r + ((nnz % n_parts) * r) / n_parts;
        while (row < n_rows && indptr[row] < target) row++;
        bounds[r] = row;
    }
    bounds[n_parts] = n_rows;
}
