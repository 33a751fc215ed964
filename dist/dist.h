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
void dist_bcast(void *buf, int64_t bytes, int root);
/* Broadcasts a string array owned by root (allocated on the other ranks). */
void dist_bcast_strings(char ***items, int64_t *n, int root);

/* Collective agreement on failure: every rank passes whether it failed and its message.
 * Returns non-zero on every rank if any rank failed; the lowest failing rank prints
 * "atlasvi: error: <msg>" once. Never hangs as long as every rank calls it. */
int dist_any_failed(int failed, const char *msg);

/* Gathers row blocks of a float matrix (local_rows x cols) to rank 0 in rank order. */
void dist_gather_rows_f32(const float *local, int64_t local_rows, int64_t cols, float *out_root);

/* Pure shard arithmetic (no MPI): splits rows [0, n_rows) into n_parts contiguous
 * blocks balanced by non-zeros. bounds has n_parts + 1 entries. */
void dist_plan_shards(const int64_t *indptr, int64_t n_rows, int n_parts, int64_t *bounds);

#endif
