#include <stdio.h>

#include "src/cli.h"

int av_cmd_latent(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "atlasvi: error: 'latent' is not built yet\n");
    return 2;
}
