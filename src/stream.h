/* Out-of-core training data (design.md "Distribution", formats.md 4.6): a rank's shard is
 * read in chunks of cells by one prefetch thread and shuffled within a window of chunks.
 * No HDF5 here: the app supplies the function that reads rows.
 *
 * The schedule of one epoch (AvStreamPlan, pure arithmetic, unit-tested on its own):
 *   - the shard's chunks [k*C, (k+1)*C) are visited in a random order per epoch;
 *   - each chunk's training cells (is_val == 0) are shuffled and cut into W slices;
 *   - round r emits slice r-i of the chunk at position i, for every position i in
 *     [r-W+1, r], all these cells shuffled together. So every round mixes W chunks,
 *     at most W chunks are resident, the chunk at position r-W+1 is done after round r
 *     and the one at position r+1 is read meanwhile (W + 1 chunks in memory at most).
 *   - rounds run from 0 to n_chunks + W - 2; every training cell is emitted once. */
#ifndef AV_STREAM_H
#define AV_STREAM_H
#include <stdint.h>

#include "src/data.h"

/* What the trainer reads cells from when a shard does not stay in memory. */
typedef struct {
    void *ctx;
    /* Reads local rows [lo, hi) of the shard (global rows row0 + lo ...) into out, as
     * av_input_read_rows does, checking the counts. Called from the prefetch thread only,
     * the only thread that touches the file while a pass runs. 0, or -1 with err. */
    int (*read)(void *ctx, int64_t lo, int64_t hi, AvCsr *out, char *err);
    int64_t chunk_cells; /* cells per chunk (the last one may be shorter) */
    int window;          /* chunks shuffled together (W) */
} AvCellSource;

/* ------------------------------------------------------------ schedule (pure) */

typedef struct {
    int64_t n_rows, chunk, n_chunks;
    int window;
    uint64_t seed;
    int rank;
    const uint8_t *is_val; /* n_rows flags (1: validation, skipped), or NULL */
    int epoch;
    int64_t *order; /* n_chunks: the chunk visited at each position this epoch */
} AvStreamPlan;

void av_stream_plan_init(AvStreamPlan *p, int64_t n_rows, int64_t chunk, int window, uint64_t seed,
                         int rank, const uint8_t *is_val);
void av_stream_plan_free(AvStreamPlan *p);
/* Draws the chunk order of an epoch. */
void av_stream_plan_epoch(AvStreamPlan *p, int epoch);
/* Rounds of an epoch: n_chunks + window - 1 (0 without chunks). */
int64_t av_stream_n_rounds(const AvStreamPlan *p);
/* Positions resident during round r: [*first, *last] (empty when first > last). */
void av_stream_round_span(const AvStreamPlan *p, int64_t r, int64_t *first, int64_t *last);
/* Training cells (local rows) of the chunk at position pos, shuffled for this epoch.
 * rows has room for p->chunk entries; returns their number. */
int64_t av_stream_chunk_train(const AvStreamPlan *p, int64_t pos, int64_t *rows);
/* Cells of round r, shuffled: train[k], n_train[k] are the lists of position first + k
 * (from av_stream_chunk_train) for the span of round r. out has room for
 * window * chunk entries; returns their number. */
int64_t av_stream_round_cells(const AvStreamPlan *p, int64_t r, int64_t *const *train,
                              const int64_t *n_train, int64_t *out);

/* ------------------------------------------------------------ prefetching reader */

typedef struct AvStream AvStream;

/* A reader of src's chunks with n_slots chunk buffers (window + 1 when training). */
AvStream *av_stream_open(const AvCellSource *src, int64_t n_rows, int n_slots);
void av_stream_close(AvStream *s);

/* One cell as the feeds hand it out: valid until the feed moves past its chunk. */
typedef struct {
    int64_t row; /* local row in the shard */
    const int32_t *idx;
    const float *val;
    int64_t nnz;
} AvCellRef;

typedef struct AvFeed AvFeed;
/* The training cells of one epoch in the order of the schedule above (plan's epoch must
 * be set); starts the prefetch thread. */
AvFeed *av_feed_train(AvStream *s, const AvStreamPlan *p);
/* Cells in row order, chunk by chunk: which = 1 validation cells, 0 training cells,
 * -1 every cell (is_val may then be NULL). */
AvFeed *av_feed_seq(AvStream *s, const AvStreamPlan *p, int which);
/* 0: *c is the next cell; 1: no more cells; -1: a read failed (err filled). */
int av_feed_next(AvFeed *f, AvCellRef *c, char *err);
/* Stops the prefetch thread and frees every chunk of the pass. */
void av_feed_close(AvFeed *f);

#endif
