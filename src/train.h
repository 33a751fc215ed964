/* The training loop of scvi-tools' TrainingPlan for scVI, data-parallel: every rank
 * holds a block of cells and the full model; each step takes a global minibatch split
 * across ranks and sums gradients through the communicator the caller provides. */
#ifndef AV_TRAIN_H
#define AV_TRAIN_H
#include <stdint.h>
#include <stdio.h>

#include "models/scvi.h"
#include "src/adam.h"
#include "src/data.h"
#include "src/stream.h"

/* What the trainer needs from the ranks; dist/ supplies it, tests may fake it. */
typedef struct {
    int rank, size;
    void (*allreduce_f32)(float *buf, int64_t n);
    void (*allreduce_f64)(double *buf, int64_t n);
} AvComm;

/* This rank's cells: rows [row0, row0 + x.n_rows) of the registered matrix. */
typedef struct {
    AvCsr x;
    int64_t row0;
    int64_t n_obs; /* all cells, all ranks */
    int n_cat;
    int32_t *cat; /* [n_rows, n_cat]: batch, label, extra covariates (models/scvi.h) */
    int n_cont;
    float *cont; /* [n_rows, n_cont] */
    /* Out of core (atlasvi train --stream): x holds only n_rows and n_cols (no indptr)
     * and the trainer reads the counts through this source, chunk by chunk. */
    const AvCellSource *stream;
} AvTrainData;

typedef struct {
    int max_epochs; /* 0: scvi-tools' heuristic min(round(20000 / n * 400), 400) */
    int batch_size;
    double train_size; /* 0: scvi-tools' default 0.9 with its tiny-last-batch rule */
    int train_size_given;
    uint64_t seed;
    float lr, weight_decay, eps;
    int n_epochs_kl_warmup;
    float min_kl_weight, max_kl_weight;
    int early_stopping, early_stopping_patience;
    float early_stopping_min_delta;
    int reduce_lr_on_plateau, lr_patience;
    float lr_factor, lr_min;
    int check_val_every_n_epoch; /* validation ELBO every n epochs; 0: only when early
                                  * stopping or LR-on-plateau needs it (scvi-tools' default) */
    int progress;                /* progress bar on stderr (rank 0) */
    int64_t max_steps; /* > 0: stop after this many optimiser steps in all (benchmarks); the
                        * epoch it ends in is cut short and recorded as it stands */
    FILE *metrics;     /* JSON lines per epoch (rank 0), or NULL */
    /* Called on every rank after each epoch (checkpoints); non-zero stops training with
     * an error. The trainer's state is complete at that point: resuming from it repeats
     * nothing and skips nothing at epoch granularity. */
    int (*on_epoch)(void *ctx, int epoch, char *err);
    void *on_epoch_ctx;
} AvTrainOptions;

void av_train_defaults(AvTrainOptions *o);
int av_default_max_epochs(int64_t n_obs);

/* One local minibatch gathered from a rank's cells into buffers sized once (nothing is
 * allocated per step). Used by training, inference, DE and posterior outputs. */
typedef struct {
    AvBatch b;
    int64_t *indptr, *cell;
    int32_t *indices, *cat;
    float *counts, *cont;
    int64_t cap_rows, cap_nnz;
} AvMinibatch;

void av_minibatch_init(AvMinibatch *mb, const AvTrainData *d, int64_t cap_rows);
void av_minibatch_free(AvMinibatch *mb);
/* Gathers local rows rows[0..n); the loss divides by n_global. */
const AvBatch *av_minibatch_fill(AvMinibatch *mb, const AvTrainData *d, const int64_t *rows,
                                 int64_t n, int64_t n_global);

/* Per-epoch history, as scvi-tools' model.history_. */
typedef struct {
    int n_epochs, cap;
    double *elbo_train, *rec_train, *kl_train, *loss_train, *kl_weight;
    double *elbo_val, *rec_val, *kl_val, *loss_val; /* NaN where no validation ran */
    double seconds, cells_per_s;
} AvHistory;

void av_history_free(AvHistory *h);
/* Appends one epoch: elbo, rec, kl, loss and kl_weight of train, then elbo, rec, kl,
 * loss of validation (NaN when none ran). */
void av_history_append(AvHistory *h, const double *row);

/* The state a run resumes from: epochs done and Adam's step and moments. */
typedef struct {
    AvAdam adam;
    float *m, *v; /* parameter-slab sized */
    int epochs_done;
    float lr;
    double best_val;
    int bad_epochs, bad_epochs_lr;
} AvOptState;

void av_opt_state_init(AvOptState *s, const AvScvi *m, const AvTrainOptions *o);
void av_opt_state_free(AvOptState *s);

/* Trains m on the data; on return the model holds the last weights (as scvi-tools). A
 * training loss that is not finite is an error (-1 and err on every rank, as
 * scvi-tools raises), before that epoch's history, metrics line or on_epoch. */
int av_train(AvScvi *m, const AvTrainData *d, const AvTrainOptions *o, const AvComm *comm,
             AvOptState *st, AvHistory *hist, char *err);

/* Eval-mode latent of every local cell: mean (give_mean) of q(z|x), or its variance.
 * For the ln latent the mean is a Monte-Carlo estimate of E[softmax(z)]. */
void av_latent(AvScvi *m, const AvTrainData *d, const AvComm *comm, int batch_size, float *mean,
               float *var);

/* Normalized expression rho * library_size of every local cell (eval mode, n_samples
 * posterior samples averaged; transform_batch >= 0 decodes every cell in that batch). */
void av_normalized(AvScvi *m, const AvTrainData *d, const AvComm *comm, int batch_size,
                   int n_samples, int transform_batch, float library_size, float *out);

/* Library prior per batch from all cells of all ranks (log total counts, empty cells
 * count as 0); mean and population variance. */
void av_library_prior(const AvTrainData *d, const AvComm *comm, int n_batch, double *mean,
                      double *var);
/* Its pieces, for callers that see cells one at a time (streaming): s holds 3 * n_batch
 * sums (cells, log total, its square) to add a cell to, reduce, then finish. */
void av_library_stats_add(double *s, int n_batch, int batch, const float *vals, int64_t nnz);
void av_library_stats_finish(const double *s, int n_batch, double *mean, double *var);

#endif
