/* atlasvi train --stream: the glue between io/ (reading chunks of rows) and the
 * trainer's cell source (src/stream.h). */
#ifndef AV_APP_STREAM_H
#define AV_APP_STREAM_H
#include <stdint.h>

#include "models/scvi.h"
#include "src/app.h"
#include "src/stream.h"

typedef struct AvStreamInput AvStreamInput;

/* Collective: registers path as av_setup_load does, without reading counts, and opens it
 * on every rank for chunked reads of this rank's block; d->stream points at the source.
 * Every rank returns the same status (message printed once by the caller). */
int av_stream_setup(AvSetup *s, const char *path, const AvSetup *reference, AvTrainData *d,
                    int64_t chunk_cells, int window, AvStreamInput **out, char *err);
void av_stream_input_free(AvStreamInput *si);

/* Non-integer counts seen so far by this rank's reads (for one warning after training). */
int64_t av_stream_non_integer(const AvStreamInput *si);

/* Eval-mode latent means (n_rows x n_latent, local rows) and, when norm is not NULL,
 * normalized expression (as av_normalized) of every local cell, read chunk by chunk.
 * Local status: 0, or -1 with err (a read failed). */
int av_stream_outputs(AvScvi *m, const AvTrainData *d, const AvComm *c, int batch_size, float *z,
                      float *norm, int n_samples, int transform_batch, float library_size,
                      char *err);

/* Library-size prior per batch (as av_library_prior) read through the stream.
 * Collective; returns the agreed status. */
int av_stream_library_prior(const AvTrainData *d, const AvComm *c, int n_batch, double *mean,
                            double *var, char *err);

#endif
