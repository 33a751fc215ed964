#include "dist/dist.h"

/* Weight of rows [0, row): their non-zeros plus one per row. Strictly increasing in row
 * for a valid (non-decreasing) indptr, so a boundary can be found by bisection. Kept in
 * [0, INT64_MAX] for a corrupt one (values near INT64_MAX, or decreasing), which the
 * readers reject later: the plan must not overflow first. */
static int64_t cost(const int64_t *indptr, int64_t row) {
    int64_t w;
    if (__builtin_sub_overflow(indptr[row], indptr[0], &w) || __builtin_add_overflow(w, row, &w))
        return indptr[row] > indptr[0] ? INT64_MAX : 0;
    return w < 0 ? 0 : w;
}

/* floor(r * total / p) without forming r * total (total may be near 2^62). */
static int64_t share(int64_t total, int64_t r, int64_t p) {
    return (total / p) * r + ((total % p) * r) / p;
}

void dist_plan_shards(const int64_t *indptr, int64_t n_rows, int n_parts, int64_t *bounds) {
    if (n_parts < 1) return;
    if (n_rows < 0) n_rows = 0;
    bounds[0] = 0;
    bounds[n_parts] = n_rows;
    if (n_rows == 0) {
        for (int r = 1; r < n_parts; r++) bounds[r] = 0;
        return;
    }
    int64_t total = cost(indptr, n_rows), prev = 0;
    for (int r = 1; r < n_parts; r++) {
        int64_t target = share(total, r, n_parts);
        /* First row in [prev, n_rows] whose start weight reaches target. */
        int64_t lo = prev, hi = n_rows;
        while (lo < hi) {
            int64_t mid = lo + (hi - lo) / 2;
            if (cost(indptr, mid) < target)
                lo = mid + 1;
            else
                hi = mid;
        }
        /* The row start nearest the target (ties go to the earlier one). */
        if (lo > prev && target - cost(indptr, lo - 1) <= cost(indptr, lo) - target) lo--;
        bounds[r] = lo;
        prev = lo;
    }
}
