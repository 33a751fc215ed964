/* atlasvi latent: apply a saved scVI model to a file (see cmd_common.c). */
#include "src/cli.h"
#include "src/cmd_common.h"

int av_cmd_latent(int argc, char **argv) {
    return av_cmd_apply(argc, argv, 0);
}
