/* DE and posterior outputs over ranks: groups from obs, pooled posterior draws of rho that
 * do not depend on the number of ranks, raw statistics reduced exactly. */
#include "src/app_de.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "io/input.h"
#include "io/output.h"
#include "src/rng.h"
#include "src/util.h"

int av_de_read_groups(const char *path, const char *layer, const char *key, int64_t n_obs,
                      int32_t **codes, char ***categories, int64_t *n_categories, char *err) {
    int rc = 0;
    *codes = av_malloc(sizeof(int32_t) * (size_t)(n_obs + 1));
    *categories = NULL;
    *n_categories = 0;
    if (dist_rank() == 0) {
        AvInput in = {0};
        AvColumn c = {0};
        rc = av_input_open(&in, path, layer, err) || av_input_read_obs_column(&in, key, &c, err);
        if (!rc) {
            av_column_to_categorical(&c);
            if (c.n != n_obs)
                rc = av_err(err, "%s: obs column '%s' has %lld entries for %lld cells", path, key,
                            (long long)c.n, (long long)n_obs);
        }
        if (!rc) {
            memcpy(*codes, c.codes, sizeof(int32_t) * (size_t)n_obs);
            *categories = c.categories;
            *n_categories = c.n_categories;
            c.categories = NULL;
            c.n_categories = 0;
        }
        av_column_free(&c);
        av_input_close(&in);
    }
    if (dist_any_failed(rc, err)) {
        free(*codes);
        *codes = NULL;
        av_free_strings(*categories, *n_categories);
        *categories = NULL;
        *n_categories = 0;
        return -1;
    }
    dist_bcast(*codes, (int64_t)sizeof(int32_t) * n_obs, 0);
    dist_bcast_strings(categories, n_categories, 0);
    return 0;
}

/* ------------------------------------------------------------------ minibatches */

const AvBatch *av_de_batch_fill(AvMinibatch *mb, const AvTrainData *d, const int64_t *rows,
                                int64_t n, int transform_batch) {
    const AvBatch *b = av_minibatch_fill(mb, d, rows, n, n);
    if (transform_batch >= 0 && d->n_cat)
        for (int64_t i = 0; i < n; i++) mb->cat[i * d->n_cat + AV_CAT_BATCH] = transform_batch;
    return b;
}

/* ------------------------------------------------------------------ posterior draws */

/* One requested draw on this rank: posterior sample s of local row r goes to out row i. */
typedef struct {
    int64_t s, row, out;
} Req;

static int req_cmp(const void *a, const void *b) {
    const Req *x = a, *y = b;
    if (x->s != y->s) return x->s < y->s ? -1 : 1;
    if (x->row != y->row) return x->row < y->row ? -1 : 1;
    return (x->out > y->out) - (x->out < y->out);
}

/* Uniform integer in [0, n) from two 32-bit words (64-bit multiply-high). */
static int64_t draw_index(AvRng4 r, int64_t n) {
    uint64_t u = ((uint64_t)r.v[0] << 32) | r.v[1];
    return (int64_t)(((unsigned __int128)u * (unsigned __int128)(uint64_t)n) >> 64);
}

#define AV_DE_STREAM ((uint32_t)AV_STREAM_SAMPLE << 24 | 0xDEu)

float *av_de_sample_rho(AvScvi *m, const AvTrainData *d, const uint8_t *member, int64_t n_member,
                        const AvDeSampling *o, uint32_t key, int64_t *n_rows,
                        int64_t *rows_per_block) {
    AvGraph *g = &m->g;
    int64_t G = m->cfg.n_input, n_local = d->x.n_rows, M = o->n_samples_overall;
    int n_blocks = o->batch_correction ? m->cfg.n_batch : 1;
    int64_t Mb = o->batch_correction ? M / n_blocks : M;
    if (Mb == 0) Mb = 2;
    int64_t total = Mb * n_blocks;
    *n_rows = total;
    if (rows_per_block) *rows_per_block = Mb;
    float *out = av_calloc((size_t)(total * G + 1), sizeof(float));
    /* members in global order: position p -> cell */
    int64_t *cells = av_malloc(sizeof(int64_t) * (size_t)(n_member + 1));
    int64_t np = 0;
    for (int64_t c = 0; c < d->n_obs && np < n_member; c++)
        if (member[c]) cells[np++] = c;
    int64_t S = Mb / n_member + 1, pool = S * n_member;
    Req *req = av_malloc(sizeof(Req) * (size_t)(Mb + 1));
    AvMinibatch mb;
    int bs = o->batch_size > 0 ? o->batch_size : 128;
    if (bs > g->max_batch) bs = (int)g->max_batch;
    if (bs > 1024) bs = 1024;
    av_minibatch_init(&mb, d, bs);
    int64_t *rows = av_malloc(sizeof(int64_t) * (size_t)bs);
    int64_t keep_step = g->step;
    int keep_training = g->training;
    g->training = 0;
    for (int blk = 0; blk < n_blocks; blk++) {
        int tb = o->batch_correction ? blk : -1;
        int64_t nr = 0;
        for (int64_t i = 0; i < Mb; i++) {
            AvRng4 r = av_philox(o->seed, (uint32_t)i, key, (uint32_t)(blk + 1), AV_DE_STREAM);
            int64_t k = draw_index(r, pool), s = k / n_member, c = cells[k % n_member];
            if (c < d->row0 || c >= d->row0 + n_local) continue;
            req[nr].s = s;
            req[nr].row = c - d->row0;
            req[nr++].out = blk * Mb + i;
        }
        qsort(req, (size_t)nr, sizeof(Req), req_cmp);
        /* per posterior sample, the distinct rows that need it, bs at a time */
        for (int64_t a = 0; a < nr;) {
            int64_t s = req[a].s, e = a, k = 0;
            int64_t first[1024];
            while (e < nr && req[e].s == s && k < bs && k < 1024) {
                if (k == 0 || rows[k - 1] != req[e].row) {
                    first[k] = e;
                    rows[k++] = req[e].row;
                }
                e++;
            }
            /* e may stop inside the run of the last row: take its remaining copies too */
            while (e < nr && req[e].s == s && req[e].row == rows[k - 1]) e++;
            /* Always a full batch (padded with the last row): OpenBLAS picks kernels by
             * matrix size, so a cell's rho would otherwise depend on how many cells share
             * its pass, i.e. on the number of ranks. */
            for (int64_t j = k; j < bs; j++) rows[j] = rows[k - 1];
            g->step = ((int64_t)1 << 31) + s; /* inference noise, apart from training */
            av_graph_forward_until(g, av_de_batch_fill(&mb, d, rows, bs, tb), m->rho);
            for (int64_t j = 0; j < k; j++) {
                int64_t stop = j + 1 < k ? first[j + 1] : e;
                for (int64_t q = first[j]; q < stop; q++)
                    memcpy(out + req[q].out * G, m->rho->v + j * G, sizeof(float) * (size_t)G);
            }
            a = e;
        }
    }
    g->step = keep_step;
    g->training = keep_training;
    dist_allreduce_f32(out, total * G);
    free(rows);
    av_minibatch_free(&mb);
    free(req);
    free(cells);
    return out;
}

/* ------------------------------------------------------------------ raw statistics */

void av_de_raw_stats(const AvTrainData *d, const uint8_t *member, int64_t n_member,
                     double *raw_mean, double *nonzero, double *norm_mean) {
    int64_t G = d->x.n_cols;
    /* scaled counts x * 1e4 / total <= 1e4 per cell: a fixed-point sum with 2^bits per unit
     * cannot overflow and is the same in any order */
    int bits = (int)floor(log2(ldexp(1.0, 62) / (1e4 * (double)(d->n_obs > 0 ? d->n_obs : 1))));
    if (bits > 52) bits = 52;
    if (bits < 0) bits = 0;
    double unit = ldexp(1.0, bits);
    double *sum = av_calloc((size_t)(G + 1), sizeof(double));
    int64_t *cnt = av_calloc((size_t)(2 * G + 1), sizeof(int64_t));
    for (int64_t i = 0; i < d->x.n_rows; i++) {
        if (!member[d->row0 + i]) continue;
        int64_t a = d->x.indptr[i], e = d->x.indptr[i + 1];
        double tot = 0;
        for (int64_t k = a; k < e; k++) tot += d->x.data[k];
        double f = 1e4 / tot;
        for (int64_t k = a; k < e; k++) {
            int32_t j = d->x.indices[k];
            double x = d->x.data[k];
            sum[j] += x;
            cnt[j] += x != 0;
            cnt[G + j] += llround(x * f * unit);
        }
    }
    dist_allreduce_f64(sum, G);
    dist_allreduce_i64(cnt, 2 * G);
    double n = (double)n_member;
    for (int64_t j = 0; j < G; j++) {
        raw_mean[j] = sum[j] / n;
        nonzero[j] = (double)cnt[j] / n;
        norm_mean[j] = (double)cnt[G + j] / unit / n;
    }
    free(sum);
    free(cnt);
}

int av_de_write_layers(const char *input, const char *layer, const char *output, int64_t n_obs,
                       int64_t n_vars, int n, const char *const *names, const float *const *data,
                       char *err) {
    int rc = 0;
    if (dist_rank() == 0) {
        AvInput in = {0};
        rc = av_input_open(&in, input, layer, err) || av_input_read_names(&in, err);
        AvWriter *w = rc ? NULL : av_writer_create(output, &in, err);
        if (!rc && !w) rc = -1;
        for (int k = 0; k < n && !rc; k++)
            rc = av_writer_layer(w, names[k], data[k], n_obs, n_vars, err);
        if (w) {
            if (rc)
                av_writer_abort(w);
            else
                rc = av_writer_commit(w, err);
        }
        av_input_close(&in);
    }
    return dist_any_failed(rc, err) ? -1 : 0;
}
