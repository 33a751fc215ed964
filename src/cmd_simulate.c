#include <stdio.h>

#include "src/cli.h"

int av_cmd_simulate(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "atlasvi: error: 'simulate' is not built yet\n");
    return 2;
}
