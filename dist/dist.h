/* Everything that knows there are several ranks. Only dist/ calls MPI (and NCCL).
 * Without mpirun the same calls work as one rank. */
#ifndef AV_DIST_H
#define AV_DIST_H
#include <stdint.h>

int dist_init(int *argc, char ***argv);
void dist_finalize(void);
int dist_rank(void);
int dist_size(void);
void dist_barrier(void);

/* In-place sums over all ranks. */
void dist_allreduce_f32(float *buf, int64_t n);
void dist_allreduce_f64(double *buf, int64_t n);
void dist_allreduce_i64(int64_t *buf, int64_t n);
/* In-place element-wise minimum / maximum over all ranks. */
void dist_allreduce_min_i64(int64_t *buf, int64_t n);
void dist_allreduce_max_i64(int64_t *buf, int64_t n);
void dist_allreduce_max_f64(double *buf, int64_t n);
/* out[r] = value of rank r (out has dist_size() entries, on every rank). */
void dist_allgather_i64(int64_t value, int64_t *out);
/* Sum of value over the ranks before this one (0 on rank 0): a rank's global row offset. */
int64_t dist_exscan_i64(int64_t value);
void dist_bcast(void *buf, int64_t bytes, int root);
/* Broadcasts a string array owned by root (allocated on the other ranks). */
void dist_bcast_strings(char ***items, int64_t *n, int root);

/* Collective agreement on failure: every rank passes whether it failed and its message.
 * Returns non-zero on every rank if any rank failed; the lowest failing rank prints
 * "atlasvi: error: <msg>" once. Never hangs as long as every rank calls it. */
int dist_any_failed(int failed, const char *msg);

/* For unexpected fatal errors only (a bug, a failed MPI call, memory gone) where the other
 * ranks cannot be told through dist_any_failed: prints "atlasvi: error: <msg>" from the
 * calling rank (with its rank number when there are several) and ends every rank at once
 * with MPI_Abort, exit status 1. Without MPI it just exits 1. Never returns. */
_Noreturn void dist_abort(const char *msg);

/* Gathers row blocks of a float matrix (local_rows x cols) to rank 0 in rank order.
 * Ranks may hold different numbers of rows, zero included; out_root (rank 0 only) holds
 * sum(local_rows) x cols. Totals beyond 2^31 elements are fine. */
void dist_gather_rows_f32(const float *local, int64_t local_rows, int64_t cols, float *out_root);

/* Pure shard arithmetic (no MPI): splits rows [0, n_rows) into n_parts contiguous
 * blocks balanced by non-zeros. bounds has n_parts + 1 entries: part r is rows
 * [bounds[r], bounds[r+1]); bounds[0] = 0, bounds[n_parts] = n_rows, never decreasing.
 * Each row weighs its non-zeros plus one (so empty rows and an all-zero matrix still
 * split evenly by rows); boundaries are the row starts nearest to r * total / n_parts.
 * indptr has n_rows + 1 non-decreasing entries (it need not start at 0); offsets may be
 * anywhere in int64 (2^40 and beyond). With more parts than rows some parts are empty. */
void dist_plan_shards(const int64_t *indptr, int64_t n_rows, int n_parts, int64_t *bounds);

#endif
