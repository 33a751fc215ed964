#include <stdio.h>

#include "src/cli.h"

int av_cmd_train(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "atlasvi: error: 'train' is not built yet\n");
    return 2;
}
