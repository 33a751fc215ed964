/* The core's size limits: each test builds a graph past a limit that the core once had
 * (a fixed table or a fixed-width key) and checks that it still gives the right result.
 * Run as `test_core_limits NAME`, one CTest test per limit. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "src/ops_impl.h"
#include "src/rng.h"

static int failures = 0;

#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

/* The arena once held 64 blocks and aborted on the 65th; small blocks reach that fast. */
static void arena_many_blocks(void) {
    enum { N_ALLOC = 300, BYTES = 256 };
    AvGraph g;
    av_graph_init(&g, 4, 1);
    g.block_size = BYTES; /* one allocation per block */
    unsigned char *p[N_ALLOC];
    for (int i = 0; i < N_ALLOC; i++) {
        p[i] = av_arena_alloc(&g, BYTES);
        int zero = 1;
        for (int k = 0; k < BYTES; k++) zero &= p[i][k] == 0;
        EXPECT(zero, "allocation %d is not zero-filled", i);
        memset(p[i], i & 0xff, BYTES);
    }
    EXPECT(g.n_blocks == N_ALLOC, "%d blocks for %d allocations", g.n_blocks, N_ALLOC);
    /* blocks never move: what was written through the first pointers is still there */
    for (int i = 0; i < N_ALLOC; i++) {
        int same = 1;
        for (int k = 0; k < BYTES; k++) same &= p[i][k] == (unsigned char)(i & 0xff);
        EXPECT(same, "allocation %d was overwritten or moved", i);
    }
    av_graph_free(&g);
}

/* A small batch of dense inputs [N, 2]: cells 0..N of a global minibatch of 2N. */
enum { N = 5 };
static int64_t cell_ids[N];
static float cont_in[N * 2];
static AvBatch dense_batch(void) {
    for (int i = 0; i < N; i++) {
        cell_ids[i] = 7 + 3 * i;
        cont_in[2 * i] = 0.25f * (float)(i + 1);
        cont_in[2 * i + 1] = 1.0f - 0.3f * (float)i;
    }
    AvBatch b = {.n = N, .n_global = 2 * N, .cell = cell_ids, .n_cont = 2, .cont = cont_in};
    return b;
}

/* The loss node kept its terms in the four input slots: a fifth was written past them.
 * Six linear terms t_k = x w_k + b_k with weights k + 1 check the value, the per-term
 * sums and every term's gradient. */
static void loss_many_terms(void) {
    enum { T = 6 };
    AvGraph g;
    av_graph_init(&g, N, 1);
    AvTensor *wt[T], *b[T], *terms[T];
    float w[T];
    for (int k = 0; k < T; k++) {
        char name[32];
        snprintf(name, sizeof name, "w%d", k);
        wt[k] = av_param(&g, name, 2, 1);
        snprintf(name, sizeof name, "b%d", k);
        b[k] = av_param(&g, name, 1, 1);
    }
    av_graph_alloc_params(&g);
    AvTensor *x = av_op_cont_input(&g, 2);
    for (int k = 0; k < T; k++) {
        wt[k]->v[0] = 0.1f * (float)(k + 1);
        wt[k]->v[1] = -0.2f;
        b[k]->v[0] = 0.5f * (float)k;
        w[k] = (float)(k + 1);
        terms[k] = av_op_linear(&g, 0, x, NULL, wt[k], b[k], 0, NULL, NULL);
    }
    AvTensor *loss = av_op_loss(&g, T, terms, w);
    AvBatch bt = dense_batch();
    av_graph_forward(&g, &bt);
    av_graph_backward(&g);
    double sx0 = 0, sx1 = 0, total = 0;
    for (int i = 0; i < N; i++) sx0 += cont_in[2 * i], sx1 += cont_in[2 * i + 1];
    for (int k = 0; k < T; k++) {
        double s = wt[k]->v[0] * sx0 + wt[k]->v[1] * sx1 + N * b[k]->v[0];
        total += w[k] * s;
        EXPECT(fabs(g.loss_terms[k] - s) < 1e-5, "term %d sums to %g, want %g", k, g.loss_terms[k],
               s);
        double gb = w[k] * N / (2.0 * N), gw0 = w[k] * sx0 / (2.0 * N);
        EXPECT(fabs(b[k]->g[0] - gb) < 1e-5, "d loss / d b%d = %g, want %g", k, b[k]->g[0], gb);
        EXPECT(fabs(wt[k]->g[0] - gw0) < 1e-5, "d loss / d w%d = %g, want %g", k, wt[k]->g[0], gw0);
    }
    EXPECT(fabs(loss->v[0] - total / (2.0 * N)) < 1e-5, "loss %g, want %g", loss->v[0],
           total / (2.0 * N));
    av_graph_free(&g);
}

/* More terms than AV_MAX_LOSS_TERMS stop the program (SIGABRT, with a message) instead
 * of overrunning the weights: run in a child process. */
static void loss_too_many_terms(void) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        AvGraph g;
        av_graph_init(&g, N, 1);
        AvTensor *terms[AV_MAX_LOSS_TERMS + 1];
        float w[AV_MAX_LOSS_TERMS + 1] = {0};
        for (int k = 0; k <= AV_MAX_LOSS_TERMS; k++) terms[k] = av_op_cont_input(&g, 1);
        av_op_loss(&g, AV_MAX_LOSS_TERMS + 1, terms, w);
        _exit(0); /* not reached when the limit is checked */
    }
    int st = 0;
    EXPECT(pid > 0 && waitpid(pid, &st, 0) == pid, "fork or wait failed");
    EXPECT(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "%d loss terms did not abort (status %d)",
           AV_MAX_LOSS_TERMS + 1, st);
}

static void loss_terms(void) {
    loss_many_terms();
    loss_too_many_terms();
}

/* Gradient planning once kept 1024 distinct input tensors, then gave up and re-planned
 * (zeroing every gradient) on every backward. y = relu^R(x W + b) with positive y reads
 * R + 3 tensors: the plan must be made once, let each relu assign its input's gradient,
 * and give d sum(y) / d b = N and d / d W = column sums of x, on every backward. */
static void grad_plan_many_tensors(void) {
    enum { R = 1500, C = 3 };
    AvGraph g;
    av_graph_init(&g, N, 1);
    AvTensor *wt = av_param(&g, "w", 2, C), *b = av_param(&g, "b", 1, C);
    av_graph_alloc_params(&g);
    for (int k = 0; k < 2 * C; k++) wt->v[k] = 0.1f;
    for (int j = 0; j < C; j++) b->v[j] = 1.0f;
    AvTensor *x = av_op_cont_input(&g, 2);
    AvTensor *y = av_op_linear(&g, 0, x, NULL, wt, b, 0, NULL, NULL), *t = y, *mid = NULL;
    for (int r = 0; r < R; r++) {
        if (r == R / 2) mid = t; /* read by the relu at node r + 2 */
        t = av_op_relu(&g, t);
    }
    AvBatch bt = dense_batch();
    float ones[N * C];
    for (int k = 0; k < N * C; k++) ones[k] = 1.0f;
    for (int pass = 0; pass < 2; pass++) {
        av_graph_forward(&g, &bt);
        av_graph_backward_from(&g, t, ones);
        EXPECT(g.grads_planned, "backward %d: no gradient plan for %d tensors", pass, R + 3);
        EXPECT(y->grad_writer == 2 && mid->grad_writer == R / 2 + 2,
               "backward %d: writers %d and %d, want 2 and %d", pass, y->grad_writer,
               mid->grad_writer, R / 2 + 2);
        for (int j = 0; j < C; j++) {
            EXPECT(b->g[j] == (float)N, "backward %d: d / d b[%d] = %g, want %d", pass, j, b->g[j],
                   N);
            for (int c = 0; c < 2; c++) {
                double want = 0;
                for (int i = 0; i < N; i++) want += cont_in[2 * i + c];
                EXPECT(fabs(wt->g[c * C + j] - want) < 1e-5,
                       "backward %d: d / d w[%d,%d] = %g, want %g", pass, c, j, wt->g[c * C + j],
                       want);
            }
        }
    }
    av_graph_free(&g);
}

/* Dropout and noise streams were keyed by AV_STREAM_NOISE + 16 (node + 1) shifted into
 * the top 12 bits of one counter word, so nodes 256 apart drew the same numbers. Here 300
 * dropouts (nodes 1..300) and 257 reparameterisations (nodes 301..557) of one input. */
enum { WIDE = 64, N_DROP = 300, N_NOISE = 257 };
static float wide_in[N * WIDE];

/* The mask the keys of before gave dropout node `node` (cell high words are 0 here). */
static int mask_as_before(const AvGraph *g, int node, const float *mask, float p) {
    uint32_t stream = AV_STREAM_NOISE + 16 * (uint32_t)(node + 1);
    float keep = 1.0f / (1.0f - p);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < WIDE; j += 4) {
            AvRng4 r = av_philox(g->seed, (uint32_t)cell_ids[i], 0, (uint32_t)g->step,
                                 (stream << 20) | (uint32_t)(j >> 2));
            for (int q = 0; q < 4; q++)
                if (mask[i * WIDE + j + q] != (av_u01(r.v[q]) < p ? 0.0f : keep)) return 0;
        }
    return 1;
}

static void rng_streams(void) {
    const float p = 0.5f;
    AvGraph g;
    av_graph_init(&g, N, 20261204);
    g.step = 3;
    AvTensor *x = av_op_cont_input(&g, WIDE), *z[N_NOISE];
    for (int k = 0; k < N_DROP; k++) av_op_dropout(&g, x, p);
    for (int k = 0; k < N_NOISE; k++) z[k] = av_op_reparam(&g, x, x);
    AvBatch bt = dense_batch();
    for (int k = 0; k < N * WIDE; k++) wide_in[k] = 0.5f + 0.01f * (float)k;
    bt.n_cont = WIDE;
    bt.cont = wide_in;
    av_graph_forward(&g, &bt);
    /* below node 256 the keys are today's: scVI's random streams do not change */
    EXPECT(mask_as_before(&g, 1, av_dropout_mask(&g, 0), p), "dropout at node 1 changed its keys");
    EXPECT(mask_as_before(&g, 255, av_dropout_mask(&g, 254), p),
           "dropout at node 255 changed its keys");
    size_t bytes = sizeof(float) * N * WIDE;
    for (int k = 0; k + 256 < N_DROP; k++)
        EXPECT(memcmp(av_dropout_mask(&g, k), av_dropout_mask(&g, k + 256), bytes),
               "dropouts at nodes %d and %d drew the same mask", k + 1, k + 257);
    EXPECT(memcmp(av_noise_of(&g, z[0]), av_noise_of(&g, z[256]), bytes),
           "noise at nodes %d and %d is the same", N_DROP + 1, N_DROP + 257);
    av_graph_free(&g);
}

int main(int argc, char **argv) {
    static const struct {
        const char *name;
        void (*run)(void);
    } tests[] = {{"arena", arena_many_blocks},
                 {"loss_terms", loss_terms},
                 {"grad_plan", grad_plan_many_tensors},
                 {"rng_streams", rng_streams}};
    int ran = 0;
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
        if (argc < 2 || !strcmp(argv[1], tests[i].name)) {
            tests[i].run();
            ran++;
        }
    if (!ran) {
        fprintf(stderr, "test_core_limits: no test named %s\n", argv[1]);
        return 2;
    }
    if (failures) fprintf(stderr, "%d failure(s)\n", failures);
    return failures ? 1 : 0;
}
