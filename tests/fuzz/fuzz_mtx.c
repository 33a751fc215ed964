/* libFuzzer target: a Matrix Market folder (10x "MEX") read by io/mtx.c through
 * av_input_open, as `atlasvi info DIR` and `atlasvi train DIR` read it. The input is split
 * at each line "~~~" into matrix.mtx, barcodes.tsv and features.tsv (parts that are
 * missing are not written; a fourth part, if any, becomes genes.tsv). An input starting
 * with the line "GZ" writes the parts gzip-compressed (matrix.mtx.gz, ...). Seeds:
 * jobs/fuzz.sh. */
#include <errno.h>
#include <sys/stat.h>
#include <zlib.h>

#include "tests/fuzz/fuzz_common.h"

static char dir[4200];
static const char *const names[] = {"matrix.mtx", "barcodes.tsv", "features.tsv", "genes.tsv"};
#define N_PARTS 4

static void part_path(char *buf, size_t len, int k, int gz) {
    snprintf(buf, len, "%s/%s%s", dir, names[k], gz ? ".gz" : "");
}

static void write_gz(const char *p, const uint8_t *data, size_t size) {
    unlink(p);
    gzFile g = gzopen(p, "wb1");
    if (!g || (size && gzwrite(g, data, (unsigned)size) != (int)size) || gzclose(g) != Z_OK) {
        perror(p);
        abort();
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_quiet_hdf5();
    snprintf(dir, sizeof dir, "%s/mex", fuzz_tmpdir());
    if (mkdir(dir, 0700) && errno != EEXIST) {
        perror(dir);
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char sep[] = "\n~~~\n";
    const size_t sl = sizeof sep - 1;
    int gz = size >= 3 && !memcmp(data, "GZ\n", 3);
    if (gz) data += 3, size -= 3;
    char p[4300];
    size_t at = 0;
    int k = 0;
    for (; k < N_PARTS && at <= size; k++) {
        size_t end = at;
        while (end + sl <= size && memcmp(data + end, sep, sl)) end++;
        if (end + sl > size) end = size;
        part_path(p, sizeof p, k, gz);
        if (gz)
            write_gz(p, data + at, end - at);
        else
            fuzz_write(p, data + at, end - at);
        at = end + sl; /* past the separator (or past the end) */
    }
    fuzz_read_all_layers(dir);
    fuzz_read_input(dir, "all");
    for (int j = 0; j < N_PARTS; j++) {
        part_path(p, sizeof p, j, 0);
        unlink(p);
        part_path(p, sizeof p, j, 1);
        unlink(p);
    }
    (void)k;
    fuzz_check_no_open_ids("Matrix Market reader");
    return 0;
}
