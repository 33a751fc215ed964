/* scVI training as scvi-tools' TrainingPlan does it (model-spec.md section 6), with a
 * global minibatch split across ranks (section 6.10). */
#include "src/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "src/ops_impl.h"
#include "src/rng.h"
#include "src/util.h"

void av_train_defaults(AvTrainOptions *o) {
    memset(o, 0, sizeof *o);
    o->batch_size = 128;
    o->lr = 1e-3f;
    o->weight_decay = 1e-6f;
    o->eps = 0.01f;
    o->n_epochs_kl_warmup = 400;
    o->min_kl_weight = 0.0f;
    o->max_kl_weight = 1.0f;
    o->early_stopping_patience = 45;
    o->lr_patience = 30;
    o->lr_factor = 0.6f;
    o->lr_min = 0.0f;
    /* scvi-tools validates only when early stopping or LR-on-plateau asks; a held-out
     * ELBO every epoch costs ~3% and changes nothing in training, so it is on here. */
    o->check_val_every_n_epoch = 1;
}

/* max(1, min(round(20000 / n * 400), 400)), with Python's round half to even */
int av_default_max_epochs(int64_t n_obs) {
    double e = nearbyint(20000.0 / (double)n_obs * 400.0);
    if (e > 400) e = 400;
    if (e < 1) e = 1;
    return (int)e;
}

void av_history_free(AvHistory *h) {
    double **cols[] = {&h->elbo_train, &h->rec_train, &h->kl_train, &h->loss_train, &h->kl_weight,
                       &h->elbo_val,   &h->rec_val,   &h->kl_val,   &h->loss_val};
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++) free(*cols[i]);
    memset(h, 0, sizeof *h);
}

void av_history_append(AvHistory *h, const double *row) {
    double **cols[] = {&h->elbo_train, &h->rec_train, &h->kl_train, &h->loss_train, &h->kl_weight,
                       &h->elbo_val,   &h->rec_val,   &h->kl_val,   &h->loss_val};
    if (h->n_epochs == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 64;
        for (size_t i = 0; i < 9; i++)
            *cols[i] = av_realloc(*cols[i], sizeof(double) * (size_t)h->cap);
    }
    for (size_t i = 0; i < 9; i++) (*cols[i])[h->n_epochs] = row[i];
    h->n_epochs++;
}

void av_opt_state_init(AvOptState *s, const AvScvi *m, const AvTrainOptions *o) {
    memset(s, 0, sizeof *s);
    s->adam = av_adam_defaults();
    s->adam.lr = o->lr;
    s->adam.weight_decay = o->weight_decay;
    s->adam.eps = o->eps;
    s->lr = o->lr;
    s->m = av_calloc_aligned((size_t)m->g.param_size, sizeof(float));
    s->v = av_calloc_aligned((size_t)m->g.param_size, sizeof(float));
    s->best_val = INFINITY;
}

void av_opt_state_free(AvOptState *s) {
    free(s->m);
    free(s->v);
    memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------------ minibatches */

void av_minibatch_init(AvMinibatch *mb, const AvTrainData *d, int64_t cap_rows) {
    memset(mb, 0, sizeof *mb);
    int64_t max_row = 0; /* streaming (no indptr): grown on demand by mini_fill_feed */
    for (int64_t i = 0; d->x.indptr && i < d->x.n_rows; i++) {
        int64_t nz = d->x.indptr[i + 1] - d->x.indptr[i];
        if (nz > max_row) max_row = nz;
    }
    mb->cap_rows = cap_rows;
    mb->cap_nnz = cap_rows * max_row;
    mb->indptr = av_malloc(sizeof(int64_t) * (size_t)(cap_rows + 1));
    mb->cell = av_malloc(sizeof(int64_t) * (size_t)(cap_rows + 1));
    mb->indices = av_malloc(sizeof(int32_t) * (size_t)(mb->cap_nnz + 1));
    mb->counts = av_malloc(sizeof(float) * (size_t)(mb->cap_nnz + 1));
    mb->cat = av_malloc(sizeof(int32_t) * (size_t)(cap_rows * (d->n_cat ? d->n_cat : 1)));
    mb->cont = av_malloc(sizeof(float) * (size_t)(cap_rows * (d->n_cont ? d->n_cont : 1)));
}

void av_minibatch_free(AvMinibatch *mb) {
    free(mb->indptr);
    free(mb->cell);
    free(mb->indices);
    free(mb->counts);
    free(mb->cat);
    free(mb->cont);
}

/* Gathers local rows rows[0..n) into the minibatch. */
const AvBatch *av_minibatch_fill(AvMinibatch *mb, const AvTrainData *d, const int64_t *rows,
                                 int64_t n, int64_t n_global) {
    int64_t nz = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t r = rows[i], a = d->x.indptr[r], e = d->x.indptr[r + 1];
        mb->indptr[i] = nz;
        memcpy(mb->indices + nz, d->x.indices + a, sizeof(int32_t) * (size_t)(e - a));
        memcpy(mb->counts + nz, d->x.data + a, sizeof(float) * (size_t)(e - a));
        nz += e - a;
        mb->cell[i] = d->row0 + r;
        if (d->n_cat)
            memcpy(mb->cat + i * d->n_cat, d->cat + r * d->n_cat,
                   sizeof(int32_t) * (size_t)d->n_cat);
        if (d->n_cont)
            memcpy(mb->cont + i * d->n_cont, d->cont + r * d->n_cont,
                   sizeof(float) * (size_t)d->n_cont);
    }
    mb->indptr[n] = nz;
    AvBatch b = {(int)n,     n_global, mb->cell, mb->indptr, mb->indices,
                 mb->counts, d->n_cat, mb->cat,  d->n_cont,  mb->cont};
    mb->b = b;
    return &mb->b;
}

/* Gathers the next n cells of a stream feed into the minibatch; *got is how many there
 * were (fewer only at the end of the feed). -1 when a read failed (err filled). */
static int mini_fill_feed(AvMinibatch *mb, const AvTrainData *d, AvFeed *f, int64_t n, int64_t *got,
                          char *err) {
    int64_t nz = 0, i = 0;
    int rc = 0;
    for (; i < n; i++) {
        AvCellRef c;
        rc = av_feed_next(f, &c, err);
        if (rc) break;
        if (nz + c.nnz > mb->cap_nnz) {
            mb->cap_nnz = 2 * (nz + c.nnz);
            mb->indices = av_realloc(mb->indices, sizeof(int32_t) * (size_t)(mb->cap_nnz + 1));
            mb->counts = av_realloc(mb->counts, sizeof(float) * (size_t)(mb->cap_nnz + 1));
        }
        mb->indptr[i] = nz;
        memcpy(mb->indices + nz, c.idx, sizeof(int32_t) * (size_t)c.nnz);
        memcpy(mb->counts + nz, c.val, sizeof(float) * (size_t)c.nnz);
        nz += c.nnz;
        mb->cell[i] = d->row0 + c.row;
        if (d->n_cat)
            memcpy(mb->cat + i * d->n_cat, d->cat + c.row * d->n_cat,
                   sizeof(int32_t) * (size_t)d->n_cat);
        if (d->n_cont)
            memcpy(mb->cont + i * d->n_cont, d->cont + c.row * d->n_cont,
                   sizeof(float) * (size_t)d->n_cont);
    }
    mb->indptr[i] = nz;
    *got = i;
    return rc < 0 ? -1 : 0;
}

static const AvBatch *mini_batch(AvMinibatch *mb, const AvTrainData *d, int64_t n,
                                 int64_t n_global) {
    AvBatch b = {(int)n,     n_global, mb->cell, mb->indptr, mb->indices,
                 mb->counts, d->n_cat, mb->cat,  d->n_cont,  mb->cont};
    mb->b = b;
    return &mb->b;
}

/* ------------------------------------------------------------------ split */

static uint64_t split_key(uint64_t seed, int64_t cell) {
    AvRng4 r =
        av_philox(seed, (uint32_t)cell, (uint32_t)((uint64_t)cell >> 32), AV_STREAM_SPLIT, 0);
    return ((uint64_t)r.v[0] << 32) | r.v[1];
}

/* Validation = the n_val cells with the smallest keys over all ranks, so the split does
 * not depend on the number of ranks. The threshold is found by bisection on the key,
 * one tiny all-reduce per bit. */
static void split_cells(const AvTrainData *d, const AvComm *c, uint64_t seed, int64_t n_val,
                        uint8_t *is_val) {
    int64_t n = d->x.n_rows;
    uint64_t *keys = av_malloc(sizeof(uint64_t) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) keys[i] = split_key(seed, d->row0 + i);
    uint64_t lo = 0, hi = UINT64_MAX; /* invariant: count(< lo) <= n_val < count(< hi) */
    while (hi - lo > 1) {
        uint64_t mid = lo + (hi - lo) / 2;
        double cnt = 0;
        for (int64_t i = 0; i < n; i++) cnt += keys[i] < mid;
        if (c->size > 1) c->allreduce_f64(&cnt, 1);
        if ((int64_t)cnt <= n_val)
            lo = mid;
        else
            hi = mid;
    }
    /* lo ends as the (n_val + 1)-th smallest key: exactly n_val keys lie below it */
    for (int64_t i = 0; i < n; i++) is_val[i] = keys[i] < lo;
    free(keys);
}

/* ------------------------------------------------------------------ progress */

static void progress(const AvTrainOptions *o, const AvComm *c, int epoch, int max_epochs,
                     double loss, double cells_per_s, double elapsed) {
    if (!o->progress || c->rank != 0) return;
    int width = 24, done = (int)((double)width * (epoch + 1) / max_epochs);
    double eta = elapsed / (epoch + 1) * (max_epochs - epoch - 1);
    char bar[32];
    for (int i = 0; i < width; i++) bar[i] = i < done ? '=' : ' ';
    bar[width] = 0;
    fprintf(stderr, "\rEpoch %d/%d [%s] loss %.1f | %.0f cells/s | ETA %dm%02ds", epoch + 1,
            max_epochs, bar, loss, cells_per_s, (int)eta / 60, (int)eta % 60);
    if (epoch + 1 == max_epochs) fputc('\n', stderr);
    fflush(stderr);
}

/* ------------------------------------------------------------------ training */

static void adam_step(AvScvi *m, AvOptState *st) {
    AvGraph *g = &m->g;
    st->adam.step++;
    st->adam.lr = st->lr;
    /* element-wise with one set of hyperparameters: one pass over the packed prefix of
     * parameters the ops read (av_graph_pack_params) */
    av_adam_update(&st->adam, g->param_v, g->param_g, st->m, st->v, g->used_size);
}

/* Eval-mode sums over local cells of the given rows: rec, kl (unweighted), loss. */
static void evaluate(AvScvi *m, const AvTrainData *d, AvMinibatch *mb, const int64_t *rows,
                     int64_t n, int batch_size, double kl_weight, double *sums) {
    AvGraph *g = &m->g;
    g->training = 0;
    for (int64_t s = 0; s < n; s += batch_size) {
        int64_t k = n - s < batch_size ? n - s : batch_size;
        av_graph_forward(g, av_minibatch_fill(mb, d, rows + s, k, k));
        double kl = g->loss_terms[1] + (m->kl_l ? g->loss_terms[2] : 0);
        sums[0] += g->loss_terms[0];
        sums[1] += kl;
        sums[2] +=
            g->loss_terms[0] + kl_weight * g->loss_terms[1] + (m->kl_l ? g->loss_terms[2] : 0);
    }
    g->training = 1;
}

/* evaluate() over the validation cells of a stream, read in row order. */
static int evaluate_feed(AvScvi *m, const AvTrainData *d, AvMinibatch *mb, AvStream *s,
                         const AvStreamPlan *p, int batch_size, double kl_weight, double *sums,
                         char *err) {
    AvGraph *g = &m->g;
    AvFeed *f = av_feed_seq(s, p, 1);
    int rc = 0;
    g->training = 0;
    for (;;) {
        int64_t k = 0;
        rc = mini_fill_feed(mb, d, f, batch_size, &k, err);
        if (rc || k == 0) break;
        av_graph_forward(g, mini_batch(mb, d, k, k));
        double kl = g->loss_terms[1] + (m->kl_l ? g->loss_terms[2] : 0);
        sums[0] += g->loss_terms[0];
        sums[1] += kl;
        sums[2] +=
            g->loss_terms[0] + kl_weight * g->loss_terms[1] + (m->kl_l ? g->loss_terms[2] : 0);
        if (k < batch_size) break;
    }
    g->training = 1;
    av_feed_close(f);
    return rc;
}

/* Streaming: whether any rank failed to read its cells (a collective every rank reaches
 * at the same point). -1 where this rank failed (err holds why), -2 where another did. */
static int stream_agree(const AvComm *c, int rc) {
    double f = rc ? 1 : 0;
    if (c->size > 1) c->allreduce_f64(&f, 1);
    return rc ? -1 : f > 0 ? -2 : 0;
}

/* Per-epoch phase timing for the metrics line (benchmarks/scaling.py). The BatchNorm
 * statistic reductions happen inside forward/backward through g->reduce, a plain function
 * pointer without context, so av_train routes them through timed_reduce, which adds the
 * time spent in the communicator's all-reduce to a file-scope counter. One av_train at a
 * time per process (as the CLI and the tests run it); timing changes no numbers. */
static AvReduceFn reduce_inner;
static double reduce_seconds;

static void timed_reduce(double *buf, int64_t n) {
    double t = av_now();
    reduce_inner(buf, n);
    reduce_seconds += av_now() - t;
}

int av_train(AvScvi *m, const AvTrainData *d, const AvTrainOptions *o, const AvComm *c,
             AvOptState *st, AvHistory *hist, char *err) {
    AvGraph *g = &m->g;
    int64_t N = d->n_obs, B = o->batch_size, n_local = d->x.n_rows;
    if (B < 2) return av_err(err, "--batch-size must be at least 2 (got %lld)", (long long)B);
    int max_epochs = o->max_epochs > 0 ? o->max_epochs : av_default_max_epochs(N);

    /* Split (6.1): n_train = ceil(train_size * n); a train set whose last minibatch
     * would hold 1 or 2 cells gives them to validation unless train_size was given. */
    double ts = o->train_size > 0 ? o->train_size : 0.9;
    int64_t n_train = (int64_t)ceil(ts * (double)N), n_val = N - n_train;
    int64_t r = n_train % B;
    if ((r == 1 || r == 2) && !o->train_size_given && n_val > 0) n_train -= r, n_val += r;
    uint8_t *is_val = av_malloc((size_t)(n_local ? n_local : 1));
    split_cells(d, c, o->seed, n_val, is_val);
    int64_t nt = 0, nv = 0, *train_rows = NULL, *val_rows = NULL;
    AvStreamPlan plan = {0};
    AvStream *stream = NULL;
    if (d->stream) { /* out of core: the split flags stay, cells come through the stream */
        for (int64_t i = 0; i < n_local; i++) nv += is_val[i];
        nt = n_local - nv;
        av_stream_plan_init(&plan, n_local, d->stream->chunk_cells, d->stream->window, o->seed,
                            c->rank, is_val);
        stream = av_stream_open(d->stream, n_local, d->stream->window + 1);
    } else {
        train_rows = av_malloc(sizeof(int64_t) * (size_t)(n_local + 1));
        val_rows = av_malloc(sizeof(int64_t) * (size_t)(n_local + 1));
        for (int64_t i = 0; i < n_local; i++) {
            if (is_val[i])
                val_rows[nv++] = i;
            else
                train_rows[nt++] = i;
        }
        free(is_val);
        is_val = NULL;
    }

    /* Every rank's train count, to cut each global step into per-rank shares. */
    double *counts = av_calloc((size_t)c->size, sizeof(double));
    counts[c->rank] = (double)nt;
    if (c->size > 1) c->allreduce_f64(counts, c->size);
    int64_t n_train_all = 0;
    for (int q = 0; q < c->size; q++) n_train_all += (int64_t)counts[q];
    if (n_train_all < 2) {
        free(counts);
        free(train_rows);
        free(val_rows);
        free(is_val);
        av_stream_close(stream);
        av_stream_plan_free(&plan);
        return av_err(err, "too few training cells (%lld): need at least 2",
                      (long long)n_train_all);
    }
    int64_t steps = (n_train_all + B - 1) / B;

    int validate = o->early_stopping || o->reduce_lr_on_plateau || o->check_val_every_n_epoch > 0;
    AvMinibatch mb;
    av_minibatch_init(&mb, d, B);
    if (c->size > 1) {
        reduce_inner = c->allreduce_f64;
        g->reduce = timed_reduce;
    }
    /* this rank's seconds per epoch: data, compute, all-reduce, validation, train loop */
    double *tph = av_calloc((size_t)(5 * c->size), sizeof(double));
    double t0 = av_now();
    int64_t cells_done = 0;
    int stop = 0, rc = 0;
    for (int epoch = st->epochs_done; epoch < max_epochs && !stop && !rc; epoch++) {
        double klw = epoch < o->n_epochs_kl_warmup
                         ? o->min_kl_weight + (o->max_kl_weight - o->min_kl_weight) * epoch /
                                                  (double)o->n_epochs_kl_warmup
                         : o->max_kl_weight;
        av_scvi_set_kl_weight(m, (float)klw);
        /* a fresh local permutation per epoch (Fisher-Yates on the counter-based stream) */
        AvRngSeq rs;
        av_seq_init(&rs, o->seed, AV_STREAM_SHUFFLE, ((uint64_t)epoch << 24) | (uint64_t)c->rank);
        AvFeed *feed = NULL;
        if (stream) { /* chunks in a random order, shuffled within the window */
            av_stream_plan_epoch(&plan, epoch);
            feed = av_feed_train(stream, &plan);
        }
        for (int64_t i = stream ? 0 : nt - 1; i > 0; i--) {
            int64_t j = (int64_t)(av_seq_uniform(&rs) * (double)(i + 1));
            if (j > i) j = i;
            int64_t t = train_rows[i];
            train_rows[i] = train_rows[j];
            train_rows[j] = t;
        }
        double sums[4] = {0, 0, 0, 0}; /* rec, kl, cells, sum of minibatch losses */
        double t_data = 0, t_comp = 0, t_red = 0, t_ep = av_now();
        int64_t n_steps = 0;
        for (int64_t s = 0; s < steps; s++) {
            int64_t a = s * B, e = (s + 1) * B < n_train_all ? (s + 1) * B : n_train_all;
            int64_t lo = 0, hi = 0, ng = 0;
            for (int q = 0; q < c->size; q++) {
                int64_t nq = (int64_t)counts[q];
                int64_t ql = (int64_t)((__int128)a * nq / n_train_all);
                int64_t qh = (int64_t)((__int128)e * nq / n_train_all);
                ng += qh - ql;
                if (q == c->rank) lo = ql, hi = qh;
            }
            g->step = (int64_t)epoch * steps + s;
            if (o->max_steps > 0 && g->step >= o->max_steps) {
                stop = 1;
                break;
            }
            double ta = av_now(), tb;
            const AvBatch *batch;
            if (feed) {
                int64_t got = 0;
                rc = mini_fill_feed(&mb, d, feed, hi - lo, &got, err);
                if (!rc && got != hi - lo)
                    rc = av_err(err, "internal: the stream gave %lld of %lld cells", (long long)got,
                                (long long)(hi - lo));
                tb = av_now();
                rc = stream_agree(c, rc); /* a collective: counted as all-reduce */
                t_red += av_now() - tb;
                if (rc) break;
                batch = mini_batch(&mb, d, hi - lo, ng);
            } else {
                batch = av_minibatch_fill(&mb, d, train_rows + lo, hi - lo, ng);
                tb = av_now();
            }
            t_data += tb - ta;
            /* compute = forward + backward + Adam less the reductions inside them */
            double tc = av_now(), red0 = reduce_seconds;
            av_graph_forward(g, batch);
            av_graph_backward(g);
            if (c->size > 1) {
                double tr = av_now();
                c->allreduce_f32(g->param_g, g->used_size); /* the rest stays 0 */
                reduce_seconds += av_now() - tr;
            }
            adam_step(m, st);
            double in_red = reduce_seconds - red0;
            t_red += in_red;
            t_comp += av_now() - tc - in_red;
            n_steps++;
            double kl = g->loss_terms[1] + (m->kl_l ? g->loss_terms[2] : 0);
            sums[0] += g->loss_terms[0];
            sums[1] += kl;
            sums[2] += (double)(hi - lo);
            sums[3] += g->loss->v[0];
        }
        av_feed_close(feed);
        if (rc) break;
        if (stop && n_steps == 0) break; /* --max-steps reached at the epoch's start */
        double t_val = av_now();
        t_ep = t_val - t_ep;                  /* the training steps of this epoch */
        double vs[4] = {0, 0, 0, (double)nv}; /* rec, kl, loss, cells */
        int run_val = validate && (o->check_val_every_n_epoch <= 1 ||
                                   (epoch + 1) % o->check_val_every_n_epoch == 0);
        if (run_val && stream) {
            if ((rc = stream_agree(c,
                                   evaluate_feed(m, d, &mb, stream, &plan, (int)B, klw, vs, err))))
                break;
        } else if (run_val) {
            evaluate(m, d, &mb, val_rows, nv, (int)B, klw, vs);
        }
        t_val = av_now() - t_val;
        double all[8] = {sums[0], sums[1], sums[2], sums[3], vs[0], vs[1], vs[3], vs[2]};
        if (c->size > 1) c->allreduce_f64(all, 8);
        /* every rank's phase times, for the max over ranks (one small collective) */
        memset(tph, 0, sizeof(double) * (size_t)(5 * c->size));
        double *mine = tph + 5 * c->rank;
        mine[0] = t_data, mine[1] = t_comp, mine[2] = t_red, mine[3] = t_val, mine[4] = t_ep;
        if (c->size > 1) c->allreduce_f64(tph, 5 * c->size);
        /* the least all-reduce time of any rank bounds the transfer cost from above; the
         * rest of a rank's all-reduce time is waiting for slower ranks */
        double t_ep_max = 0, t_comp_max = 0, t_red_min = t_red;
        for (int q = 0; q < c->size; q++) {
            if (tph[5 * q + 4] > t_ep_max) t_ep_max = tph[5 * q + 4];
            if (tph[5 * q + 1] > t_comp_max) t_comp_max = tph[5 * q + 1];
            if (tph[5 * q + 2] < t_red_min) t_red_min = tph[5 * q + 2];
        }
        cells_done += (int64_t)all[2];
        double elapsed = av_now() - t0;
        double row[9] = {(all[0] + all[1]) / all[2],
                         all[0] / all[2],
                         all[1] / all[2],
                         all[3] / (double)steps,
                         klw,
                         NAN,
                         NAN,
                         NAN,
                         NAN};
        /* scvi-tools raises here; the weights are lost (NaN), so nothing is written and
         * the last checkpoint stays the last finite model (the same on every rank) */
        if (!isfinite(row[0])) {
            rc = av_err(err,
                        "the training loss is not finite at epoch %d (training diverged; extreme "
                        "counts in the input, or a learning rate too high?); nothing written",
                        epoch);
            stop = 1;
            break;
        }
        if (run_val && all[6] > 0) {
            row[5] = (all[4] + all[5]) / all[6];
            row[6] = all[4] / all[6];
            row[7] = all[5] / all[6];
            row[8] = all[7] / all[6];
        }
        av_history_append(hist, row);
        st->epochs_done = epoch + 1;
        hist->seconds = elapsed;
        hist->cells_per_s = (double)cells_done / elapsed;
        if (o->metrics && c->rank == 0) {
            fprintf(o->metrics,
                    "{\"epoch\": %d, \"elbo_train\": %.6g, \"reconstruction_loss_train\": %.6g, "
                    "\"kl_local_train\": %.6g, \"train_loss\": %.6g, \"kl_weight\": %.6g",
                    epoch, row[0], row[1], row[2], row[3], row[4]);
            if (!isnan(row[5]))
                fprintf(o->metrics,
                        ", \"elbo_validation\": %.6g, \"reconstruction_loss_validation\": %.6g, "
                        "\"kl_local_validation\": %.6g, \"validation_loss\": %.6g, "
                        "\"n_validation\": %lld",
                        row[5], row[6], row[7], row[8], (long long)all[6]);
            fprintf(o->metrics, ", \"lr\": %.6g, \"seconds\": %.3f, \"cells_per_s\": %.1f", st->lr,
                    elapsed, hist->cells_per_s);
            /* this epoch's seconds on rank 0 by phase; *_max: the slowest rank's */
            fprintf(o->metrics,
                    ", \"t_data\": %.4f, \"t_compute\": %.4f, \"t_allreduce\": %.4f, "
                    "\"t_validation\": %.4f, \"t_train\": %.4f, \"t_train_max\": %.4f, "
                    "\"t_compute_max\": %.4f, \"t_allreduce_min\": %.4f, \"steps\": %lld, "
                    "\"ranks\": %d}\n",
                    t_data, t_comp, t_red, t_val, t_ep, t_ep_max, t_comp_max, t_red_min,
                    (long long)n_steps, c->size);
            fflush(o->metrics);
        }
        progress(o, c, epoch, max_epochs, row[3], hist->cells_per_s, elapsed);
        if (run_val && !isnan(row[5])) {
            /* Early stopping (6.6) and LR on plateau (6.7) see identical reduced values on
             * every rank, so every rank decides the same. */
            double v = row[5];
            if (!isfinite(v) && o->early_stopping) stop = 1;
            if (v < st->best_val - o->early_stopping_min_delta) {
                st->best_val = v;
                st->bad_epochs = 0;
            } else if (++st->bad_epochs >= o->early_stopping_patience && o->early_stopping) {
                stop = 1;
                if (c->rank == 0 && o->progress)
                    fprintf(stderr, "\nEarly stopping at epoch %d\n", epoch + 1);
            }
            if (o->reduce_lr_on_plateau) {
                if (st->bad_epochs == 0)
                    st->bad_epochs_lr = 0;
                else if (++st->bad_epochs_lr > o->lr_patience) {
                    st->lr = st->lr * o->lr_factor > o->lr_min ? st->lr * o->lr_factor : o->lr_min;
                    st->bad_epochs_lr = 0;
                }
            }
        }
        if (o->on_epoch && o->on_epoch(o->on_epoch_ctx, epoch, err)) rc = -1;
    }
    if (o->progress && c->rank == 0 && stop) fputc('\n', stderr);
    g->reduce = NULL; /* later forwards (inference) are per rank */
    reduce_inner = NULL;
    free(tph);
    av_minibatch_free(&mb);
    free(counts);
    free(train_rows);
    free(val_rows);
    free(is_val);
    av_stream_close(stream);
    av_stream_plan_free(&plan);
    return rc;
}

/* ------------------------------------------------------------------ inference */

void av_latent(AvScvi *m, const AvTrainData *d, const AvComm *comm, int batch_size, float *mean,
               float *var) {
    (void)comm;
    AvGraph *g = &m->g;
    int64_t n = d->x.n_rows, L = m->cfg.n_latent;
    AvMinibatch mb;
    av_minibatch_init(&mb, d, batch_size);
    int64_t *rows = av_malloc(sizeof(int64_t) * (size_t)batch_size);
    g->training = 0;
    for (int64_t s = 0; s < n; s += batch_size) {
        int64_t k = n - s < batch_size ? n - s : batch_size;
        for (int64_t i = 0; i < k; i++) rows[i] = s + i;
        av_graph_forward_until(g, av_minibatch_fill(&mb, d, rows, k, k), m->qz_v);
        for (int64_t i = 0; i < k; i++) {
            const float *mu = m->qz_m->v + i * L, *v = m->qz_v->v + i * L;
            if (var) memcpy(var + (s + i) * L, v, sizeof(float) * (size_t)L);
            if (!mean) continue;
            if (!m->cfg.latent_ln) {
                memcpy(mean + (s + i) * L, mu, sizeof(float) * (size_t)L);
                continue;
            }
            /* E[softmax(z)] by Monte Carlo with scvi-tools' 5000 samples */
            double acc[AV_MAX_LATENT] = {0};
            AvRngSeq rs;
            av_seq_init(&rs, g->seed, AV_STREAM_SAMPLE, (uint64_t)(d->row0 + s + i));
            for (int t = 0; t < 5000; t++) {
                float z[AV_MAX_LATENT], mx = -INFINITY;
                for (int64_t j = 0; j < L; j++) {
                    z[j] = mu[j] + sqrtf(v[j]) * (float)av_seq_normal(&rs);
                    mx = z[j] > mx ? z[j] : mx;
                }
                double sum = 0;
                for (int64_t j = 0; j < L; j++) sum += (z[j] = expf(z[j] - mx));
                for (int64_t j = 0; j < L; j++) acc[j] += z[j] / sum;
            }
            for (int64_t j = 0; j < L; j++) mean[(s + i) * L + j] = (float)(acc[j] / 5000);
        }
    }
    g->training = 1;
    free(rows);
    av_minibatch_free(&mb);
}

void av_normalized(AvScvi *m, const AvTrainData *d, const AvComm *comm, int batch_size,
                   int n_samples, int transform_batch, float library_size, float *out) {
    (void)comm;
    AvGraph *g = &m->g;
    int64_t n = d->x.n_rows, G = m->cfg.n_input;
    AvMinibatch mb;
    av_minibatch_init(&mb, d, batch_size);
    int64_t *rows = av_malloc(sizeof(int64_t) * (size_t)batch_size);
    g->training = 0;
    int64_t keep_step = g->step;
    for (int64_t s = 0; s < n; s += batch_size) {
        int64_t k = n - s < batch_size ? n - s : batch_size;
        for (int64_t i = 0; i < k; i++) rows[i] = s + i;
        const AvBatch *b = av_minibatch_fill(&mb, d, rows, k, k);
        if (transform_batch >= 0)
            for (int64_t i = 0; i < k; i++) mb.cat[i * d->n_cat + 0] = transform_batch;
        float *o = out + s * G;
        memset(o, 0, sizeof(float) * (size_t)(k * G));
        for (int t = 0; t < n_samples; t++) {
            g->step = ((int64_t)1 << 31) + t; /* inference noise, apart from training steps */
            av_graph_forward_until(g, b, m->rho);
            for (int64_t e = 0; e < k * G; e++) o[e] += m->rho->v[e];
        }
        float scale = library_size / (float)n_samples;
        for (int64_t e = 0; e < k * G; e++) o[e] *= scale;
    }
    g->step = keep_step;
    g->training = 1;
    free(rows);
    av_minibatch_free(&mb);
}

void av_library_stats_add(double *s, int n_batch, int batch, const float *vals, int64_t nnz) {
    double tot = 0;
    for (int64_t k = 0; k < nnz; k++) tot += vals[k];
    double l = tot > 0 ? log(tot) : 0.0; /* empty cells count as 0, as scvi-tools */
    s[batch] += 1;
    s[n_batch + batch] += l;
    s[2 * n_batch + batch] += l * l;
}

void av_library_stats_finish(const double *s, int n_batch, double *mean, double *var) {
    for (int b = 0; b < n_batch; b++) {
        if (s[b] == 0) {
            mean[b] = 0;
            var[b] = 1;
            continue;
        }
        mean[b] = s[n_batch + b] / s[b];
        var[b] = s[2 * n_batch + b] / s[b] - mean[b] * mean[b];
    }
}

void av_library_prior(const AvTrainData *d, const AvComm *c, int n_batch, double *mean,
                      double *var) {
    double *s = av_calloc((size_t)(3 * n_batch), sizeof(double));
    for (int64_t i = 0; i < d->x.n_rows; i++)
        av_library_stats_add(s, n_batch, d->n_cat ? d->cat[i * d->n_cat] : 0,
                             d->x.data + d->x.indptr[i], d->x.indptr[i + 1] - d->x.indptr[i]);
    if (c->size > 1) c->allreduce_f64(s, 3 * n_batch);
    av_library_stats_finish(s, n_batch, mean, var);
    free(s);
}
