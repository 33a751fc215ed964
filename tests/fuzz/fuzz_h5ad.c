/* libFuzzer target: the input bytes are an .h5ad (AnnData) file, opened
 * read-only by io/input.c as `atlasvi info` and `atlasvi train` open it (format detected
 * from the contents), with every obs/var column and a small shard read and checked, for
 * the default matrix and each layer the file lists. Seeds: jobs/fuzz.sh. */
#include "tests/fuzz/fuzz_common.h"

static char path[4200];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_quiet_hdf5();
    snprintf(path, sizeof path, "%s/input.h5ad", fuzz_tmpdir());
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_write(path, data, size);
    fuzz_read_all_layers(path);
    fuzz_read_input(path, "X");
    fuzz_check_no_open_ids("h5ad reader");
    unlink(path);
    return 0;
}
