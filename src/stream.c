/* Chunked, prefetched, window-shuffled cells of a shard (see stream.h). */
#include "src/stream.h"

#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "src/rng.h"
#include "src/util.h"

/* ------------------------------------------------------------ schedule */

/* Random streams of the schedule: AV_STREAM_SHUFFLE with the top bit of the id set (the
 * in-memory permutation uses epoch << 24 | rank there, which never sets it). */
enum { K_ORDER = 1, K_CHUNK = 2, K_ROUND = 3 };
static void sched_rng(AvRngSeq *rs, const AvStreamPlan *p, int kind, int64_t what) {
    uint64_t id = (1ull << 63) | ((uint64_t)kind << 56) | (((uint64_t)p->epoch & 0xFFFFF) << 36) |
                  (((uint64_t)p->rank & 0xFFFF) << 20) | ((uint64_t)what & 0xFFFFF);
    av_seq_init(rs, p->seed, AV_STREAM_SHUFFLE, id);
}

static void shuffle(AvRngSeq *rs, int64_t *a, int64_t n) {
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(av_seq_uniform(rs) * (double)(i + 1));
        if (j > i) j = i;
        int64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

void av_stream_plan_init(AvStreamPlan *p, int64_t n_rows, int64_t chunk, int window, uint64_t seed,
                         int rank, const uint8_t *is_val) {
    memset(p, 0, sizeof *p);
    p->n_rows = n_rows;
    p->chunk = chunk < 1 ? 1 : chunk;
    p->window = window < 1 ? 1 : window;
    p->n_chunks = (n_rows + p->chunk - 1) / p->chunk;
    p->seed = seed;
    p->rank = rank;
    p->is_val = is_val;
    p->order = av_malloc(sizeof(int64_t) * (size_t)(p->n_chunks + 1));
    for (int64_t k = 0; k < p->n_chunks; k++) p->order[k] = k;
    p->epoch = -1;
}

void av_stream_plan_free(AvStreamPlan *p) {
    free(p->order);
    memset(p, 0, sizeof *p);
}

void av_stream_plan_epoch(AvStreamPlan *p, int epoch) {
    p->epoch = epoch;
    for (int64_t k = 0; k < p->n_chunks; k++) p->order[k] = k;
    AvRngSeq rs;
    sched_rng(&rs, p, K_ORDER, 0);
    shuffle(&rs, p->order, p->n_chunks);
}

int64_t av_stream_n_rounds(const AvStreamPlan *p) {
    return p->n_chunks ? p->n_chunks + p->window - 1 : 0;
}

void av_stream_round_span(const AvStreamPlan *p, int64_t r, int64_t *first, int64_t *last) {
    *first = r - p->window + 1 > 0 ? r - p->window + 1 : 0;
    *last = r < p->n_chunks - 1 ? r : p->n_chunks - 1;
}

int64_t av_stream_chunk_train(const AvStreamPlan *p, int64_t pos, int64_t *rows) {
    int64_t k = p->order[pos], lo = k * p->chunk;
    int64_t hi = lo + p->chunk < p->n_rows ? lo + p->chunk : p->n_rows, n = 0;
    for (int64_t i = lo; i < hi; i++)
        if (!p->is_val || !p->is_val[i]) rows[n++] = i;
    AvRngSeq rs;
    sched_rng(&rs, p, K_CHUNK, k);
    shuffle(&rs, rows, n);
    return n;
}

int64_t av_stream_round_cells(const AvStreamPlan *p, int64_t r, int64_t *const *train,
                              const int64_t *n_train, int64_t *out) {
    int64_t first, last, n = 0, W = p->window;
    av_stream_round_span(p, r, &first, &last);
    for (int64_t i = first; i <= last; i++) {
        int64_t s = r - i, m = n_train[i - first]; /* slice s of W */
        int64_t a = s * m / W, b = (s + 1) * m / W;
        memcpy(out + n, train[i - first] + a, sizeof(int64_t) * (size_t)(b - a));
        n += b - a;
    }
    AvRngSeq rs;
    sched_rng(&rs, p, K_ROUND, r);
    shuffle(&rs, out, n);
    return n;
}

/* ------------------------------------------------------------ prefetching reader */

enum { SLOT_FREE, SLOT_LOADING, SLOT_READY };

struct AvStream {
    AvCellSource src;
    int64_t n_rows;
    int n_slots;
    AvCsr *slot;
    int *state;
    int64_t *slot_k; /* index in the pass's sequence */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t th;
    int running, stop, failed;
    int64_t fail_k;
    char err[AV_ERRLEN];
    int64_t *seq, n_seq; /* chunks to read, in order */
};

AvStream *av_stream_open(const AvCellSource *src, int64_t n_rows, int n_slots) {
    AvStream *s = av_calloc(1, sizeof *s);
    s->src = *src;
    s->n_rows = n_rows;
    s->n_slots = n_slots < 2 ? 2 : n_slots;
    s->slot = av_calloc((size_t)s->n_slots, sizeof(AvCsr));
    s->state = av_calloc((size_t)s->n_slots, sizeof(int));
    s->slot_k = av_calloc((size_t)s->n_slots, sizeof(int64_t));
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    return s;
}

static void *prefetch(void *arg) {
    AvStream *s = arg;
    int64_t C = s->src.chunk_cells;
    /* the reader may decode on an OpenMP team; here it runs beside training's threads,
     * so it keeps to this one */
    omp_set_num_threads(1);
    pthread_mutex_lock(&s->mu);
    for (int64_t k = 0; k < s->n_seq && !s->stop; k++) {
        int j = -1;
        while (!s->stop) {
            for (int q = 0; q < s->n_slots && j < 0; q++)
                if (s->state[q] == SLOT_FREE) j = q;
            if (j >= 0) break;
            pthread_cond_wait(&s->cv, &s->mu);
        }
        if (s->stop) break;
        s->state[j] = SLOT_LOADING;
        s->slot_k[j] = k;
        pthread_mutex_unlock(&s->mu);
        int64_t lo = s->seq[k] * C, hi = lo + C < s->n_rows ? lo + C : s->n_rows;
        AvCsr x = {0};
        char err[AV_ERRLEN] = "";
        int rc = s->src.read(s->src.ctx, lo, hi, &x, err);
        pthread_mutex_lock(&s->mu);
        if (rc) {
            av_csr_free(&x);
            s->state[j] = SLOT_FREE;
            s->failed = 1;
            s->fail_k = k;
            memcpy(s->err, err, sizeof err);
            pthread_cond_broadcast(&s->cv);
            break;
        }
        s->slot[j] = x;
        s->state[j] = SLOT_READY;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void pass_begin(AvStream *s, const int64_t *chunks, int64_t n) {
    s->seq = av_realloc(s->seq, sizeof(int64_t) * (size_t)(n + 1));
    memcpy(s->seq, chunks, sizeof(int64_t) * (size_t)n);
    s->n_seq = n;
    s->stop = s->failed = 0;
    s->fail_k = -1;
    s->err[0] = 0;
    if (pthread_create(&s->th, NULL, prefetch, s)) {
        /* no thread: read in the caller (get) instead */
        s->running = 0;
        return;
    }
    s->running = 1;
}

/* The k-th chunk of the pass, waiting for it; NULL (err filled) when its read failed. */
static const AvCsr *pass_get(AvStream *s, int64_t k, char *err) {
    if (!s->running) { /* synchronous fallback */
        int j = 0;
        for (int q = 0; q < s->n_slots; q++)
            if (s->state[q] == SLOT_FREE) j = q;
        int64_t C = s->src.chunk_cells, lo = s->seq[k] * C;
        int64_t hi = lo + C < s->n_rows ? lo + C : s->n_rows;
        AvCsr x = {0};
        if (s->src.read(s->src.ctx, lo, hi, &x, err)) {
            av_csr_free(&x);
            return NULL;
        }
        s->slot[j] = x;
        s->state[j] = SLOT_READY;
        s->slot_k[j] = k;
        return &s->slot[j];
    }
    pthread_mutex_lock(&s->mu);
    const AvCsr *x = NULL;
    for (;;) {
        for (int q = 0; q < s->n_slots && !x; q++)
            if (s->state[q] == SLOT_READY && s->slot_k[q] == k) x = &s->slot[q];
        if (x || (s->failed && s->fail_k <= k)) break;
        pthread_cond_wait(&s->cv, &s->mu);
    }
    if (!x) memcpy(err, s->err, AV_ERRLEN);
    pthread_mutex_unlock(&s->mu);
    return x;
}

static void pass_release(AvStream *s, int64_t k) {
    pthread_mutex_lock(&s->mu);
    for (int q = 0; q < s->n_slots; q++)
        if (s->state[q] == SLOT_READY && s->slot_k[q] == k) {
            av_csr_free(&s->slot[q]);
            s->state[q] = SLOT_FREE;
        }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void pass_end(AvStream *s) {
    if (s->running) {
        pthread_mutex_lock(&s->mu);
        s->stop = 1;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->th, NULL);
        s->running = 0;
    }
    for (int q = 0; q < s->n_slots; q++) {
        if (s->state[q] == SLOT_READY) av_csr_free(&s->slot[q]);
        s->state[q] = SLOT_FREE;
    }
}

void av_stream_close(AvStream *s) {
    if (!s) return;
    pass_end(s);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->slot);
    free(s->state);
    free(s->slot_k);
    free(s->seq);
    free(s);
}

/* ------------------------------------------------------------ feeds */

struct AvFeed {
    AvStream *s;
    const AvStreamPlan *p;
    int train, which;
    /* training: the current round's cells, the resident positions' lists */
    int64_t round, n_rounds, first, last; /* resident positions [first, last] */
    int64_t **lists, *n_list;             /* ring of window lists, by position % W */
    const AvCsr **chunk;                  /* ring of resident chunks, by position % W */
    int64_t *cells, n_cells, cur;
    /* sequential: current chunk k and row */
    int64_t k, row;
    const AvCsr *x;
};

AvFeed *av_feed_train(AvStream *s, const AvStreamPlan *p) {
    AvFeed *f = av_calloc(1, sizeof *f);
    f->s = s;
    f->p = p;
    f->train = 1;
    int W = p->window;
    f->lists = av_calloc((size_t)W, sizeof(int64_t *));
    for (int i = 0; i < W; i++) f->lists[i] = av_malloc(sizeof(int64_t) * (size_t)p->chunk);
    f->n_list = av_calloc((size_t)W, sizeof(int64_t));
    f->chunk = av_calloc((size_t)W, sizeof(AvCsr *));
    f->cells = av_malloc(sizeof(int64_t) * (size_t)(W * p->chunk));
    f->round = -1;
    f->n_rounds = av_stream_n_rounds(p);
    f->first = 0;
    f->last = -1;
    pass_begin(s, p->order, p->n_chunks);
    return f;
}

AvFeed *av_feed_seq(AvStream *s, const AvStreamPlan *p, int which) {
    AvFeed *f = av_calloc(1, sizeof *f);
    f->s = s;
    f->p = p;
    f->which = which;
    f->k = -1;
    int64_t *seq = av_malloc(sizeof(int64_t) * (size_t)(p->n_chunks + 1));
    for (int64_t k = 0; k < p->n_chunks; k++) seq[k] = k;
    pass_begin(s, seq, p->n_chunks);
    free(seq);
    return f;
}

static int next_train(AvFeed *f, AvCellRef *c, char *err) {
    const AvStreamPlan *p = f->p;
    int64_t W = p->window;
    while (f->cur == f->n_cells) {
        if (f->round + 1 >= f->n_rounds) return 1;
        f->round++;
        int64_t first, last;
        av_stream_round_span(p, f->round, &first, &last);
        for (; f->first < first; f->first++) { /* done with these positions */
            pass_release(f->s, f->first);
            f->chunk[f->first % W] = NULL;
        }
        for (; f->last < last; f->last++) { /* a new position comes in */
            int64_t pos = f->last + 1;
            const AvCsr *x = pass_get(f->s, pos, err);
            if (!x) return -1;
            f->chunk[pos % W] = x;
            f->n_list[pos % W] = av_stream_chunk_train(p, pos, f->lists[pos % W]);
        }
        int64_t *lists[64], *big = NULL, n_list[64];
        int64_t **lp = lists, *np = n_list;
        if (last - first + 1 > 64) {
            lp = av_malloc(sizeof(int64_t *) * (size_t)(last - first + 1));
            np = big = av_malloc(sizeof(int64_t) * (size_t)(last - first + 1));
        }
        for (int64_t i = first; i <= last; i++) {
            lp[i - first] = f->lists[i % W];
            np[i - first] = f->n_list[i % W];
        }
        f->n_cells = av_stream_round_cells(p, f->round, lp, np, f->cells);
        f->cur = 0;
        if (lp != lists) {
            free(lp);
            free(big);
        }
    }
    int64_t row = f->cells[f->cur++];
    int64_t k = row / p->chunk;
    /* the position of chunk k among the resident ones */
    const AvCsr *x = NULL;
    for (int64_t i = f->first; i <= f->last && !x; i++)
        if (p->order[i] == k) x = f->chunk[i % W];
    int64_t r = row - k * p->chunk;
    c->row = row;
    c->idx = x->indices + x->indptr[r];
    c->val = x->data + x->indptr[r];
    c->nnz = x->indptr[r + 1] - x->indptr[r];
    return 0;
}

static int next_seq(AvFeed *f, AvCellRef *c, char *err) {
    const AvStreamPlan *p = f->p;
    for (;;) {
        if (f->x) {
            int64_t lo = f->k * p->chunk,
                    hi = lo + p->chunk < p->n_rows ? lo + p->chunk : p->n_rows;
            while (f->row < hi) {
                int64_t i = f->row++;
                int v = p->is_val ? p->is_val[i] : 0;
                if (f->which >= 0 && v != f->which) continue;
                int64_t r = i - lo;
                c->row = i;
                c->idx = f->x->indices + f->x->indptr[r];
                c->val = f->x->data + f->x->indptr[r];
                c->nnz = f->x->indptr[r + 1] - f->x->indptr[r];
                return 0;
            }
            pass_release(f->s, f->k);
            f->x = NULL;
        }
        if (f->k + 1 >= p->n_chunks) return 1;
        f->k++;
        f->row = f->k * p->chunk;
        f->x = pass_get(f->s, f->k, err);
        if (!f->x) return -1;
    }
}

int av_feed_next(AvFeed *f, AvCellRef *c, char *err) {
    return f->train ? next_train(f, c, err) : next_seq(f, c, err);
}

void av_feed_close(AvFeed *f) {
    if (!f) return;
    pass_end(f->s);
    if (f->lists)
        for (int i = 0; i < f->p->window; i++) free(f->lists[i]);
    free(f->lists);
    free(f->n_list);
    free(f->chunk);
    free(f->cells);
    free(f);
}
