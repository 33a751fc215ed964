/* The core's size limits: each test builds a graph past a limit that the core once had
 * (a fixed table or a fixed-width key) and checks that it still gives the right result.
 * Run as `test_core_limits NAME`, one CTest test per limit. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "src/ops_impl.h"

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

int main(int argc, char **argv) {
    static const struct {
        const char *name;
        void (*run)(void);
    } tests[] = {{"arena", arena_many_blocks}};
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
