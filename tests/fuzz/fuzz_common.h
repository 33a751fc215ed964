/* Shared by the fuzz targets in tests/fuzz/ (one target per .c file). Each target turns
 * its input bytes into a file (or a Matrix Market folder) in a private temporary folder
 * and runs the reader on it the way the subcommands do. Built two ways: with libFuzzer
 * (ATLASVI_FUZZ=ON, clang) and, in the normal build, with replay_main.c, a small main()
 * that runs the target on the files named on its command line (regression replays). */
#ifndef AV_FUZZ_COMMON_H
#define AV_FUZZ_COMMON_H
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/input.h"
#include "src/app.h"
#include "src/util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Largest shape the targets read the matrix of: a crafted file can declare any shape
 * (a chunked dataset with no chunks written is a few bytes on disk), and the readers
 * allocate n_obs + 1 indptr entries as `atlasvi info` does. */
#define FUZZ_MAX_DIM 200000
#define FUZZ_ROWS 16 /* rows read through av_input_read_rows: a small shard */

static char fuzz_dir[4096];

/* A private temporary folder, once per process (removed by the OS's tmp cleaning; the
 * targets leave at most one file or folder of inputs in it). */
static inline const char *fuzz_tmpdir(void) {
    if (fuzz_dir[0]) return fuzz_dir;
    const char *base = getenv("TMPDIR");
    if (!base || !base[0]) base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(fuzz_dir, sizeof fuzz_dir, "%s/atlasvi_fuzz_XXXXXX", base);
    if (!mkdtemp(fuzz_dir)) {
        perror("fuzz: mkdtemp");
        abort();
    }
    return fuzz_dir;
}

/* Writes bytes to dir/name as a new file (unlinked first: HDF5 recognises a file it
 * still holds open by its inode, so a fresh inode per input keeps inputs independent). */
static inline void fuzz_write(const char *path, const uint8_t *data, size_t size) {
    unlink(path);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f)) {
        perror(path);
        abort();
    }
}

/* Silences HDF5's error stack printing; the readers do too (h5u_init), but HDF5 calls
 * made before them (H5Fis_hdf5) would print. */
static inline void fuzz_quiet_hdf5(void) {
    H5open();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

/* An input must leave no HDF5 object open: a leaked identifier keeps the file open
 * (and its memory) for the rest of the process. Aborts so that the fuzzer records it. */
static inline void fuzz_check_no_open_ids(const char *what) {
    ssize_t n = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    if (n > 0) {
        fprintf(stderr, "fuzz: %s left %zd HDF5 object(s) open\n", what, n);
        abort();
    }
}

/* Everything `atlasvi info` reads, then a small shard as `atlasvi train` reads it (and
 * checks it): shape, indptr, names, every obs and var column, the first FUZZ_ROWS rows.
 * Returns 0 when the file was opened (whatever was rejected after that). */
static inline int fuzz_read_input(const char *path, const char *layer) {
    AvInput in;
    char err[AV_ERRLEN];
    if (av_input_open(&in, path, layer, err)) return -1;
    (void)av_format_name(in.format);
    (void)av_input_dtype(&in);
    int no_matrix = !strcmp(av_input_storage(&in), "none");
    int small =
        in.n_obs >= 0 && in.n_vars >= 0 && in.n_obs <= FUZZ_MAX_DIM && in.n_vars <= FUZZ_MAX_DIM;
    if (small && !no_matrix) {
        int64_t *indptr = av_calloc((size_t)(in.n_obs + 1), sizeof *indptr);
        av_input_read_indptr(&in, indptr, err);
        free(indptr);
    }
    if (small) av_input_read_names(&in, err);
    for (int k = 0; k < in.n_obs_columns; k++) {
        AvColumn c;
        if (av_input_read_obs_column(&in, in.obs_columns[k], &c, err)) continue;
        av_column_to_categorical(&c);
        av_column_free(&c);
    }
    char **names;
    int nv = av_input_var_columns(&in, &names);
    for (int k = 0; k < nv; k++) {
        AvColumn c;
        if (av_input_read_var_column(&in, names[k], &c, err)) continue;
        av_column_free(&c);
    }
    char **layers;
    (void)av_input_layers(&in, &layers);
    if (small && !no_matrix && in.n_obs > 0) {
        AvCsr x = {0};
        int64_t hi = in.n_obs < FUZZ_ROWS ? in.n_obs : FUZZ_ROWS, non_integer = 0;
        if (!av_input_read_rows(&in, 0, hi, &x, err))
            av_check_counts(&x, 0, path, &non_integer, err);
        av_csr_free(&x);
        /* and a block at the end, where an off-by-one in a slab would show */
        AvCsr y = {0};
        int64_t lo = in.n_obs > 2 ? in.n_obs - 2 : 0;
        av_input_read_rows(&in, lo, in.n_obs, &y, err);
        av_csr_free(&y);
    }
    av_input_close(&in);
    return 0;
}

/* fuzz_read_input on path with the default matrix, then with each selectable layer the
 * file lists (at most 3) and with "raw"; what a user can ask for with --layer. */
static inline void fuzz_read_all_layers(const char *path) {
    if (fuzz_read_input(path, NULL)) return;
    AvInput in;
    char err[AV_ERRLEN];
    if (av_input_open(&in, path, NULL, err)) return;
    char **layers;
    int nl = av_input_layers(&in, &layers);
    char *copy[3];
    int n = nl < 3 ? nl : 3;
    for (int k = 0; k < n; k++) copy[k] = av_strdup(layers[k]);
    av_input_close(&in);
    for (int k = 0; k < n; k++) {
        fuzz_read_input(path, copy[k]);
        free(copy[k]);
    }
    fuzz_read_input(path, "raw");
}

#endif
