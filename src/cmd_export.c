/* Placeholder while the command is being written; replaced by its implementation. */
#include <stdio.h>

#include "src/cli.h"

int av_cmd_export(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "atlasvi: error: 'export' is not available in this build yet\n");
    return 1;
}
