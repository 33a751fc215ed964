#include <stdio.h>

#include "src/cli.h"

int av_cmd_info(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "atlasvi: error: 'info' is not built yet\n");
    return 2;
}
