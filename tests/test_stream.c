/* Out-of-core streaming (src/stream.h), without files or MPI:
 *   sched  the window schedule: every training cell exactly once per epoch, no validation
 *          cell, at most W chunks resident per round, orders that change with the epoch;
 *   feed   the prefetching reader over a fake source: the same, with the cells' contents,
 *          row-order feeds, and a failing read that ends the feed with its message;
 *   train  av_train from a stream (tiny chunks, window 2) against the in-memory shard:
 *          with full-batch steps (the same cells every step) the histories, validation
 *          included, agree to float tolerance, so the split is the same; with minibatches
 *          the loss falls as far as in memory. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/rng.h"
#include "src/stream.h"
#include "src/train.h"
#include "src/util.h"

static int failures;
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

/* ------------------------------------------------------------------ schedule */

static void test_sched(void) {
    const int64_t rows[] = {1, 7, 100, 1003};
    const int64_t chunks[] = {1, 3, 64, 2000};
    const int windows[] = {1, 2, 4};
    int cases = 0;
    for (size_t a = 0; a < 4; a++)
        for (size_t b = 0; b < 4; b++)
            for (size_t w = 0; w < 3; w++) {
                int64_t n = rows[a], C = chunks[b];
                int W = windows[w];
                uint8_t *is_val = malloc((size_t)n);
                for (int64_t i = 0; i < n; i++) is_val[i] = (i * 7 + 3) % 10 == 0;
                AvStreamPlan p;
                av_stream_plan_init(&p, n, C, W, 5, 1, is_val);
                int64_t *lists[64], nl[64], *cells = malloc(sizeof(int64_t) * (size_t)(W * C));
                int64_t *buf = malloc(sizeof(int64_t) * (size_t)(W * C)), nbuf = 0;
                for (int i = 0; i < W; i++) lists[i] = malloc(sizeof(int64_t) * (size_t)C);
                int *seen = calloc((size_t)n, sizeof(int));
                int64_t prev_first = -1;
                int orders_differ = 0;
                for (int epoch = 0; epoch < 3; epoch++) {
                    av_stream_plan_epoch(&p, epoch);
                    if (epoch == 1 && p.n_chunks > 5) {
                        AvStreamPlan q;
                        av_stream_plan_init(&q, n, C, W, 5, 1, is_val);
                        av_stream_plan_epoch(&q, 0);
                        orders_differ = memcmp(q.order, p.order, sizeof(int64_t) * p.n_chunks);
                        av_stream_plan_free(&q);
                        CHECK(orders_differ, "n=%lld C=%lld: epochs 0 and 1 visit chunks alike",
                              (long long)n, (long long)C);
                    }
                    memset(seen, 0, sizeof(int) * (size_t)n);
                    /* the order is a permutation */
                    int64_t sum = 0;
                    for (int64_t k = 0; k < p.n_chunks; k++) sum += p.order[k];
                    CHECK(sum == p.n_chunks * (p.n_chunks - 1) / 2, "order is not a permutation");
                    prev_first = -1;
                    for (int64_t r = 0; r < av_stream_n_rounds(&p); r++) {
                        int64_t first, last;
                        av_stream_round_span(&p, r, &first, &last);
                        CHECK(last - first + 1 <= W && first >= prev_first,
                              "round %lld: span [%lld, %lld] with W=%d", (long long)r,
                              (long long)first, (long long)last, W);
                        prev_first = first;
                        for (int64_t i = first; i <= last; i++)
                            nl[i - first] = av_stream_chunk_train(&p, i, lists[i - first]);
                        nbuf = av_stream_round_cells(&p, r, lists, nl, buf);
                        for (int64_t j = 0; j < nbuf; j++) {
                            int64_t c = buf[j];
                            CHECK(c >= 0 && c < n && !is_val[c], "cell %lld emitted", (long long)c);
                            if (c >= 0 && c < n) seen[c]++;
                            /* the chunk of c is resident */
                            int res = 0;
                            for (int64_t i = first; i <= last; i++) res |= p.order[i] == c / C;
                            CHECK(res, "cell %lld of a chunk that is not resident", (long long)c);
                        }
                    }
                    for (int64_t i = 0; i < n; i++)
                        CHECK(seen[i] == !is_val[i],
                              "n=%lld C=%lld W=%d epoch %d: cell %lld seen %d times (val %d)",
                              (long long)n, (long long)C, W, epoch, (long long)i, seen[i],
                              is_val[i]);
                }
                for (int i = 0; i < W; i++) free(lists[i]);
                free(cells);
                free(buf);
                free(seen);
                free(is_val);
                av_stream_plan_free(&p);
                cases++;
            }
    printf("sched: %d cases\n", cases);
}

/* ------------------------------------------------------------------ fake source */

typedef struct {
    int64_t n_rows, n_cols, fail_at; /* a read of a chunk holding row fail_at fails */
    int reads;
    AvCsr all;
} Fake;

static void fake_make(Fake *f, int64_t n, int64_t G, uint64_t seed) {
    memset(f, 0, sizeof *f);
    f->n_rows = n;
    f->n_cols = G;
    f->fail_at = -1;
    AvCsr *x = &f->all;
    x->n_rows = n;
    x->n_cols = G;
    x->indptr = malloc(sizeof(int64_t) * (size_t)(n + 1));
    x->indices = malloc(sizeof(int32_t) * (size_t)(n * G));
    x->data = malloc(sizeof(float) * (size_t)(n * G));
    /* two cell types with different gene means; Poisson counts */
    int64_t nz = 0;
    for (int64_t i = 0; i < n; i++) {
        x->indptr[i] = nz;
        AvRngSeq rs;
        av_seq_init(&rs, seed, AV_STREAM_SIM, (uint64_t)i);
        int type = i % 3 == 0;
        double tot = 0;
        for (int64_t g = 0; g < G; g++) {
            double mu = 0.3 + 4.0 * ((g * 13 + 7 * type) % 11 == 0) + (type ? g % 4 : 0) * 0.5;
            int64_t v = av_seq_poisson(&rs, mu);
            if (g == G - 1 && tot == 0 && v == 0) v = 1; /* no empty cells */
            if (v) {
                x->indices[nz] = (int32_t)g;
                x->data[nz++] = (float)v;
                tot += (double)v;
            }
        }
    }
    x->indptr[n] = nz;
}

static int fake_read(void *ctx, int64_t lo, int64_t hi, AvCsr *out, char *err) {
    Fake *f = ctx;
    __atomic_add_fetch(&f->reads, 1, __ATOMIC_SEQ_CST);
    if (f->fail_at >= lo && f->fail_at < hi)
        return av_err(err, "fake.h5ad: negative count -3 at cell %lld", (long long)f->fail_at);
    const AvCsr *x = &f->all;
    int64_t a = x->indptr[lo], b = x->indptr[hi];
    out->n_rows = hi - lo;
    out->n_cols = x->n_cols;
    out->indptr = malloc(sizeof(int64_t) * (size_t)(hi - lo + 1));
    out->indices = malloc(sizeof(int32_t) * (size_t)(b - a + 1));
    out->data = malloc(sizeof(float) * (size_t)(b - a + 1));
    for (int64_t i = lo; i <= hi; i++) out->indptr[i - lo] = x->indptr[i] - a;
    memcpy(out->indices, x->indices + a, sizeof(int32_t) * (size_t)(b - a));
    memcpy(out->data, x->data + a, sizeof(float) * (size_t)(b - a));
    return 0;
}

static int same_row(const Fake *f, const AvCellRef *c) {
    const AvCsr *x = &f->all;
    int64_t a = x->indptr[c->row], n = x->indptr[c->row + 1] - a;
    return n == c->nnz && !memcmp(c->idx, x->indices + a, sizeof(int32_t) * (size_t)n) &&
           !memcmp(c->val, x->data + a, sizeof(float) * (size_t)n);
}

static void test_feed(void) {
    Fake f;
    const int64_t n = 1000, C = 37;
    const int W = 3;
    fake_make(&f, n, 20, 9);
    uint8_t *is_val = malloc((size_t)n);
    for (int64_t i = 0; i < n; i++) is_val[i] = i % 9 == 4;
    AvCellSource src = {&f, fake_read, C, W};
    AvStreamPlan p;
    av_stream_plan_init(&p, n, C, W, 1, 0, is_val);
    AvStream *s = av_stream_open(&src, n, W + 1);
    int *seen = calloc((size_t)n, sizeof(int));
    char err[AV_ERRLEN] = "";
    for (int epoch = 0; epoch < 3; epoch++) {
        av_stream_plan_epoch(&p, epoch);
        memset(seen, 0, sizeof(int) * (size_t)n);
        f.reads = 0;
        AvFeed *fd = av_feed_train(s, &p);
        AvCellRef c;
        int r, bad = 0, adjacent_same_chunk = 0, total = 0;
        int64_t prev = -1;
        while ((r = av_feed_next(fd, &c, err)) == 0) {
            seen[c.row]++;
            bad += !same_row(&f, &c);
            if (prev >= 0) adjacent_same_chunk += prev / C == c.row / C;
            prev = c.row;
            total++;
        }
        av_feed_close(fd);
        CHECK(r == 1, "train feed ended with %d: %s", r, err);
        CHECK(bad == 0, "%d cells with wrong contents", bad);
        for (int64_t i = 0; i < n; i++)
            CHECK(seen[i] == !is_val[i], "epoch %d: cell %lld seen %d times", epoch, (long long)i,
                  seen[i]);
        CHECK(f.reads == p.n_chunks, "%d reads for %lld chunks", f.reads, (long long)p.n_chunks);
        /* mixing: with W chunks shuffled together consecutive cells rarely share a chunk */
        CHECK(adjacent_same_chunk < total * 0.6, "consecutive cells share a chunk %d of %d times",
              adjacent_same_chunk, total);
    }
    /* row-order feeds: validation cells, then every cell */
    for (int which = -1; which <= 1; which++) {
        AvFeed *fd = av_feed_seq(s, &p, which);
        AvCellRef c;
        int64_t expect = 0, r;
        int bad = 0;
        while ((r = av_feed_next(fd, &c, err)) == 0) {
            while (which >= 0 && expect < n && is_val[expect] != which) expect++;
            bad += c.row != expect || !same_row(&f, &c);
            expect++;
        }
        while (which >= 0 && expect < n && is_val[expect] != which) expect++;
        av_feed_close(fd);
        CHECK(r == 1 && bad == 0 && expect == n, "row-order feed %d: %d bad, ended at %lld", which,
              bad, (long long)expect);
    }
    /* a failing read ends the feed with its message, wherever it falls */
    for (int which = 0; which < 2; which++) {
        f.fail_at = 500;
        AvFeed *fd = which ? av_feed_seq(s, &p, -1) : av_feed_train(s, &p);
        AvCellRef c;
        int r;
        err[0] = 0;
        while ((r = av_feed_next(fd, &c, err)) == 0) {
        }
        av_feed_close(fd);
        CHECK(r == -1 && strstr(err, "negative count -3 at cell 500"), "failing feed: %d '%s'", r,
              err);
        f.fail_at = -1;
    }
    /* closing a feed half way stops the prefetch thread */
    {
        AvFeed *fd = av_feed_train(s, &p);
        AvCellRef c;
        for (int i = 0; i < 100; i++) av_feed_next(fd, &c, err);
        av_feed_close(fd);
    }
    av_stream_close(s);
    av_stream_plan_free(&p);
    free(seen);
    free(is_val);
    av_csr_free(&f.all);
    printf("feed: ok\n");
}

/* ------------------------------------------------------------------ training */

static void no_reduce(double *b, int64_t n) {
    (void)b;
    (void)n;
}
static void no_reduce32(float *b, int64_t n) {
    (void)b;
    (void)n;
}

static int train_once(Fake *f, int stream, int full, int epochs, AvHistory *h) {
    const int64_t n = f->n_rows;
    AvTrainData d;
    memset(&d, 0, sizeof d);
    d.n_obs = n;
    d.n_cat = 2;
    d.cat = calloc((size_t)(2 * n), sizeof(int32_t));
    for (int64_t i = 0; i < n; i++) d.cat[2 * i] = (int32_t)(i % 2);
    d.cont = malloc(sizeof(float));
    AvCellSource src = {f, fake_read, 23, 2}; /* tiny chunks, window 2 */
    if (stream) {
        d.x.n_rows = n;
        d.x.n_cols = f->n_cols;
        d.stream = &src;
    } else {
        d.x = f->all; /* borrowed */
    }
    AvScviConfig cfg;
    av_scvi_defaults(&cfg);
    cfg.n_input = f->n_cols;
    cfg.n_hidden = 32;
    cfg.n_latent = 5;
    cfg.n_batch = 2;
    AvTrainOptions to;
    av_train_defaults(&to);
    to.max_epochs = epochs;
    to.batch_size = full ? 1024 : 64;
    to.seed = 7;
    to.n_epochs_kl_warmup = 5;
    AvScvi m;
    av_scvi_build(&m, &cfg, to.batch_size, to.seed);
    AvOptState st;
    av_opt_state_init(&st, &m, &to);
    memset(h, 0, sizeof *h);
    AvComm comm = {0, 1, no_reduce32, no_reduce};
    char err[AV_ERRLEN] = "";
    int rc = av_train(&m, &d, &to, &comm, &st, h, err);
    CHECK(rc == 0, "av_train (stream %d): %s", stream, err);
    av_opt_state_free(&st);
    av_scvi_free(&m);
    free(d.cat);
    free(d.cont);
    return rc;
}

static double rel(double a, double b) {
    return fabs(a - b) / fmax(fabs(b), 1e-30);
}

static void test_train(void) {
    Fake f;
    fake_make(&f, 600, 40, 3);
    /* full batch: the same cells every step in either path */
    AvHistory a, b;
    train_once(&f, 0, 1, 4, &a);
    train_once(&f, 1, 1, 4, &b);
    double worst = 0;
    for (int e = 0; e < a.n_epochs && e < b.n_epochs; e++) {
        double v[] = {rel(b.elbo_train[e], a.elbo_train[e]), rel(b.elbo_val[e], a.elbo_val[e]),
                      rel(b.rec_val[e], a.rec_val[e]), rel(b.kl_val[e], a.kl_val[e])};
        for (int k = 0; k < 4; k++) worst = fmax(worst, v[k]);
    }
    CHECK(a.n_epochs == 4 && b.n_epochs == 4 && worst < 1e-4,
          "full batch: stream vs memory differ by %.3g (epochs %d, %d)", worst, a.n_epochs,
          b.n_epochs);
    printf("full batch: stream vs memory, worst relative difference %.3g (elbo train/val)\n",
           worst);
    av_history_free(&a);
    av_history_free(&b);
    /* minibatches: different shuffles, the same progress */
    train_once(&f, 0, 0, 12, &a);
    train_once(&f, 1, 0, 12, &b);
    int L = a.n_epochs - 1;
    double drop_a = a.elbo_train[0] - a.elbo_train[L], drop_b = b.elbo_train[0] - b.elbo_train[L];
    printf("minibatches: elbo_train %.3f -> %.3f in memory, %.3f -> %.3f streamed; "
           "elbo_val %.3f vs %.3f\n",
           a.elbo_train[0], a.elbo_train[L], b.elbo_train[0], b.elbo_train[L], a.elbo_val[L],
           b.elbo_val[L]);
    CHECK(drop_a > 0 && drop_b > 0 && rel(drop_b, drop_a) < 0.2,
          "loss decrease differs: %.3f in memory, %.3f streamed", drop_a, drop_b);
    CHECK(rel(b.elbo_val[L], a.elbo_val[L]) < 0.02, "final validation ELBO %.3f vs %.3f",
          b.elbo_val[L], a.elbo_val[L]);
    av_history_free(&a);
    av_history_free(&b);
    /* a failing read inside training: av_train returns -1 with the message */
    {
        f.fail_at = 433;
        AvHistory h;
        AvTrainData d;
        memset(&d, 0, sizeof d);
        d.n_obs = f.n_rows;
        d.x.n_rows = f.n_rows;
        d.x.n_cols = f.n_cols;
        d.n_cat = 2;
        d.cat = calloc((size_t)(2 * f.n_rows), sizeof(int32_t));
        AvCellSource src = {&f, fake_read, 23, 2};
        d.stream = &src;
        AvScviConfig cfg;
        av_scvi_defaults(&cfg);
        cfg.n_input = f.n_cols;
        cfg.n_hidden = 16;
        AvTrainOptions to;
        av_train_defaults(&to);
        to.max_epochs = 2;
        to.batch_size = 64;
        AvScvi m;
        av_scvi_build(&m, &cfg, to.batch_size, 1);
        AvOptState st;
        av_opt_state_init(&st, &m, &to);
        memset(&h, 0, sizeof h);
        AvComm comm = {0, 1, no_reduce32, no_reduce};
        char err[AV_ERRLEN] = "";
        int rc = av_train(&m, &d, &to, &comm, &st, &h, err);
        CHECK(rc == -1 && strstr(err, "negative count -3 at cell 433"), "failing train: %d '%s'",
              rc, err);
        av_history_free(&h);
        av_opt_state_free(&st);
        av_scvi_free(&m);
        free(d.cat);
        f.fail_at = -1;
    }
    av_csr_free(&f.all);
}

/* The last "key": value of a JSON-lines metrics file. */
static double last_metric(const char *path, const char *key) {
    FILE *f = fopen(path, "r");
    if (!f) return NAN;
    char line[4096], pat[128];
    double v = NAN;
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    while (fgets(line, sizeof line, f)) {
        char *p = strstr(line, pat);
        if (p) v = atof(p + strlen(pat));
    }
    fclose(f);
    return v;
}

/* compare A B TOL: the final elbo_train and elbo_validation of two runs agree within TOL
 * (relative), and both fell from their first epoch. */
static int compare(const char *a, const char *b, double tol) {
    const char *keys[] = {"elbo_train", "elbo_validation"};
    for (int k = 0; k < 2; k++) {
        double x = last_metric(a, keys[k]), y = last_metric(b, keys[k]);
        printf("%s: %.4f (%s) vs %.4f (%s)\n", keys[k], x, a, y, b);
        CHECK(isfinite(x) && isfinite(y) && rel(y, x) <= tol, "%s differs by %.3g > %.3g", keys[k],
              rel(y, x), tol);
    }
    return failures ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc == 5 && !strcmp(argv[1], "compare")) return compare(argv[2], argv[3], atof(argv[4]));
    const char *what = argc > 1 ? argv[1] : "all";
    if (!strcmp(what, "sched") || !strcmp(what, "all")) test_sched();
    if (!strcmp(what, "feed") || !strcmp(what, "all")) test_feed();
    if (!strcmp(what, "train") || !strcmp(what, "all")) test_train();
    if (failures) fprintf(stderr, "%d failure(s)\n", failures);
    return failures ? 1 : 0;
}
