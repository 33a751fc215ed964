/* atlasvi train --stream: chunks of this rank's block read through io/ on the trainer's
 * prefetch thread (the only thread doing HDF5 calls while a pass runs), counts checked
 * per chunk as they are read. */
#include "src/app_stream.h"

#include <malloc.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "io/input.h"
#include "src/util.h"

struct AvStreamInput {
    AvInput in;
    AvCellSource src;
    int64_t row0, non_integer;
};

static int read_chunk(void *ctx, int64_t lo, int64_t hi, AvCsr *out, char *err) {
    AvStreamInput *si = ctx;
    if (av_input_read_rows(&si->in, si->row0 + lo, si->row0 + hi, out, err)) return -1;
    return av_check_counts(out, si->row0 + lo, si->in.path, &si->non_integer, err);
}

int av_stream_setup(AvSetup *s, const char *path, const AvSetup *ref, AvTrainData *d,
                    int64_t chunk_cells, int window, AvStreamInput **out, char *err) {
    *out = NULL;
    if (av_setup_load_meta(s, path, ref, d, err)) return -1;
    /* The registry pass leaves n_obs-sized garbage in the heap (cell names, whole-file
     * codes, indptr on rank 0); give it back so the resident size depends on the chunks,
     * not on the file. */
    malloc_trim(0);
    AvStreamInput *si = av_calloc(1, sizeof *si);
    int rc = av_input_open(&si->in, path, s->layer, err);
    if (dist_any_failed(rc, err)) {
        av_input_close(&si->in);
        free(si);
        av_train_data_free(d);
        return -1;
    }
    si->row0 = d->row0;
    si->src.ctx = si;
    si->src.read = read_chunk;
    si->src.chunk_cells = chunk_cells;
    si->src.window = window;
    d->stream = &si->src;
    *out = si;
    return 0;
}

void av_stream_input_free(AvStreamInput *si) {
    if (!si) return;
    av_input_close(&si->in);
    free(si);
}

int64_t av_stream_non_integer(const AvStreamInput *si) {
    return si ? si->non_integer : 0;
}

/* A block of consecutive local rows gathered from a feed into a small in-memory shard. */
typedef struct {
    AvTrainData td;
    int64_t cap_rows, cap_nnz, first;
} Block;

static void block_push(Block *b, const AvCellRef *c) {
    AvCsr *x = &b->td.x;
    if (x->n_rows == 0) b->first = c->row;
    int64_t nz = x->indptr[x->n_rows];
    if (nz + c->nnz > b->cap_nnz) {
        b->cap_nnz = 2 * (nz + c->nnz);
        x->indices = av_realloc(x->indices, sizeof(int32_t) * (size_t)b->cap_nnz);
        x->data = av_realloc(x->data, sizeof(float) * (size_t)b->cap_nnz);
    }
    memcpy(x->indices + nz, c->idx, sizeof(int32_t) * (size_t)c->nnz);
    memcpy(x->data + nz, c->val, sizeof(float) * (size_t)c->nnz);
    x->indptr[++x->n_rows] = nz + c->nnz;
}

int av_stream_outputs(AvScvi *m, const AvTrainData *d, const AvComm *c, int batch_size, float *z,
                      float *norm, int n_samples, int transform_batch, float library_size,
                      char *err) {
    const int64_t T = 4096; /* cells per block handed to av_latent / av_normalized */
    int64_t L = m->cfg.n_latent, G = m->cfg.n_input;
    AvStreamPlan p;
    av_stream_plan_init(&p, d->x.n_rows, d->stream->chunk_cells, 1, 0, 0, NULL);
    AvStream *s = av_stream_open(d->stream, d->x.n_rows, 3);
    AvFeed *f = av_feed_seq(s, &p, -1);
    Block b = {0};
    b.td = *d;
    b.td.stream = NULL;
    b.td.x.n_rows = 0;
    b.td.x.indptr = av_calloc((size_t)T + 1, sizeof(int64_t));
    b.td.x.indices = NULL;
    b.td.x.data = NULL;
    int rc = 0, more = 1;
    while (more) {
        AvCellRef cell;
        int r = av_feed_next(f, &cell, err);
        if (r < 0) rc = -1;
        if (r) more = 0;
        if (!r) block_push(&b, &cell);
        if (b.td.x.n_rows == T || (!more && !rc && b.td.x.n_rows > 0)) {
            int64_t i0 = b.first;
            AvTrainData t = b.td;
            t.row0 = d->row0 + i0;
            t.cat = d->cat + i0 * d->n_cat;
            t.cont = d->cont + i0 * d->n_cont;
            av_latent(m, &t, c, batch_size, z + i0 * L, NULL);
            if (norm)
                av_normalized(m, &t, c, batch_size, n_samples, transform_batch, library_size,
                              norm + i0 * G);
            b.td.x.n_rows = 0;
        }
    }
    av_feed_close(f);
    av_stream_close(s);
    av_stream_plan_free(&p);
    free(b.td.x.indptr);
    free(b.td.x.indices);
    free(b.td.x.data);
    return rc;
}

int av_stream_library_prior(const AvTrainData *d, const AvComm *c, int n_batch, double *mean,
                            double *var, char *err) {
    /* per batch: cells, sum and sum of squares of log total counts; then a failure flag */
    double *s = av_calloc((size_t)(3 * n_batch + 1), sizeof(double));
    AvStreamPlan p;
    av_stream_plan_init(&p, d->x.n_rows, d->stream->chunk_cells, 1, 0, 0, NULL);
    AvStream *st = av_stream_open(d->stream, d->x.n_rows, 3);
    AvFeed *f = av_feed_seq(st, &p, -1);
    AvCellRef cell;
    int r;
    while ((r = av_feed_next(f, &cell, err)) == 0) {
        av_library_stats_add(s, n_batch, d->n_cat ? d->cat[cell.row * d->n_cat] : 0, cell.val,
                             cell.nnz);
    }
    av_feed_close(f);
    av_stream_close(st);
    av_stream_plan_free(&p);
    s[3 * n_batch] = r < 0;
    if (c->size > 1) c->allreduce_f64(s, 3 * n_batch + 1);
    int rc = r < 0 ? -1 : s[3 * n_batch] > 0 ? -2 : 0;
    av_library_stats_finish(s, n_batch, mean, var);
    free(s);
    return rc;
}
