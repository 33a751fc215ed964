/* Failure paths under mpiexec; tests/dist.cmake checks exit status and stderr.
 *   test_dist_fail agree R1 [R2 ...]  ranks R1, R2, ... (those < size) fail; every rank must
 *                                     learn it; only the lowest failing rank prints.
 *   test_dist_fail none               nobody fails: no rank prints, all return 0.
 *   test_dist_fail abort              the last rank calls dist_abort while the others wait
 *                                     in a barrier that would otherwise never complete. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"

int main(int argc, char **argv) {
    dist_init(&argc, &argv);
    int rank = dist_rank(), size = dist_size();
    if (argc < 2) {
        fprintf(stderr, "usage: test_dist_fail agree|none|abort [ranks]\n");
        return 2;
    }
    if (!strcmp(argv[1], "abort")) {
        if (rank == size - 1) dist_abort("aborting on purpose");
        dist_barrier();
        printf("rank %d: not reached\n", rank);
        dist_finalize();
        return 0;
    }
    int fail = 0;
    if (!strcmp(argv[1], "agree"))
        for (int i = 2; i < argc; i++) fail |= atoi(argv[i]) % size == rank;
    char msg[64];
    snprintf(msg, sizeof msg, "rank %d failed on purpose", rank);
    int any = dist_any_failed(fail, msg);
    int want = !strcmp(argv[1], "agree");
    /* A second round proves the first left every rank in step (no stray messages). */
    int again = dist_any_failed(0, "should not print");
    dist_finalize();
    if (any != want || again != 0) {
        printf("rank %d: dist_any_failed returned %d, %d\n", rank, any, again);
        return 1;
    }
    printf("rank %d: agreed %d\n", rank, any);
    return 0;
}
