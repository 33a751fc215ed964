#include <stdio.h>

#include "src/cli.h"

int av_cmd_normalize(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "atlasvi: error: 'normalize' is not built yet\n");
    return 2;
}
