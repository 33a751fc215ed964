/* libFuzzer target: the input bytes are a model file (HDF5, io/blob.c) loaded by
 * av_model_load (src/app_model.c) with the setup registry, Adam state and history, as
 * `atlasvi train --resume` loads it (`atlasvi latent` and the other model commands load
 * the same file with a subset of these). Seeds: jobs/fuzz.sh. */
#include "tests/fuzz/fuzz_common.h"

static char path[4200];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_quiet_hdf5();
    snprintf(path, sizeof path, "%s/model.h5", fuzz_tmpdir());
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_write(path, data, size);
    AvScvi m;
    AvSetup s;
    AvOptState st;
    AvHistory h;
    char err[AV_ERRLEN];
    if (!av_model_load(path, &m, &s, &st, &h, 128, err)) {
        av_scvi_free(&m);
        av_setup_free(&s);
        av_opt_state_free(&st);
        av_history_free(&h);
    }
    /* and as `atlasvi latent` loads it (model and registry only) */
    if (!av_model_load(path, &m, &s, NULL, NULL, 128, err)) {
        av_scvi_free(&m);
        av_setup_free(&s);
    }
    fuzz_check_no_open_ids("model loader");
    unlink(path);
    return 0;
}
