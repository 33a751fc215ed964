/* Hostile inputs (issue 12) read through io/input.h: Matrix Market size lines that would
 * overflow or allocate gigabytes, and h5ad dataframes whose index is written in an
 * encoding of today's anndata (nullable-string-array, categorical) or cannot be read.
 * Every fixture is written here (plain text, or HDF5's C API). A process limit on the
 * address space (4 GiB, not under AddressSanitizer) turns an allocation sized from a
 * header into a failure of this test. argv[1]: a scratch folder (created). */
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "io/input.h"
#include "src/util.h"

static int failures = 0;
static char dir[1024];

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            printf("FAIL %s:%d %s: ", __FILE__, __LINE__, #cond);                                  \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

static void write_text(const char *folder, const char *name, const char *text) {
    char p[2048];
    snprintf(p, sizeof p, "%s/%s", folder, name);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
}

/* A Matrix Market folder of 3 features x 2 barcodes with this matrix.mtx. */
static const char *mtx_folder(const char *name, const char *matrix) {
    static char p[1200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    mkdir(p, 0755);
    write_text(p, "features.tsv",
               "g0\tG0\tGene Expression\ng1\tG1\tGene Expression\n"
               "g2\tG2\tGene Expression\n");
    write_text(p, "barcodes.tsv", "AAA-1\nCCC-1\n");
    write_text(p, "matrix.mtx", matrix);
    return p;
}

/* Opening (and reading) fails with one line holding needle. */
static void expect_open_error(const char *what, const char *path, const char *needle) {
    char err[AV_ERRLEN] = "";
    AvInput in;
    int rc = av_input_open(&in, path, NULL, err);
    if (!rc) {
        AvCsr m;
        rc = av_input_read_rows(&in, 0, in.n_obs, &m, err);
        if (!rc) rc = av_input_read_names(&in, err), av_csr_free(&m);
        av_input_close(&in);
    }
    CHECK(rc != 0, "%s: opened", what);
    CHECK(rc == 0 || (strstr(err, needle) && !strchr(err, '\n')), "%s: '%s' not in: %s", what,
          needle, err);
    if (rc && strstr(err, needle)) printf("ok   %s: %s\n", what, err);
}

static void test_mtx_sizes(void) {
    const char *head = "%%MatrixMarket matrix coordinate integer general\n";
    char m[512];
    snprintf(m, sizeof m, "%s3 2 4611686018427387904\n1 1 5\n", head);
    expect_open_error("nnz * 8 would wrap", mtx_folder("mtx_wrap", m), "claims");
    snprintf(m, sizeof m, "%s3 2000000000 1\n1 1 5\n", head);
    expect_open_error("2e9 barcodes claimed, 2 listed", mtx_folder("mtx_barcodes", m),
                      "2000000000 barcodes");
    snprintf(m, sizeof m, "%s2000000000 2 1\n1 1 5\n", head);
    expect_open_error("2e9 features claimed, 3 listed", mtx_folder("mtx_features", m),
                      "2000000000 features");
    snprintf(m, sizeof m, "%s3 2 1000\n1 1 5\n2 2 1\n", head);
    expect_open_error("more entries claimed than the file holds", mtx_folder("mtx_more", m),
                      "claims 1000 entries");
    snprintf(m, sizeof m, "%s3 2 2\n1 1 5\n", head);
    expect_open_error("entries missing", mtx_folder("mtx_missing", m), "1 of 2 entries");
    /* and a good one still reads */
    snprintf(m, sizeof m, "%s3 2 3\n1 1 5\n3 1 2\n2 2 1\n", head);
    char err[AV_ERRLEN] = "";
    AvInput in;
    int rc = av_input_open(&in, mtx_folder("mtx_good", m), NULL, err);
    CHECK(rc == 0 && in.n_obs == 2 && in.n_vars == 3, "good folder: %s", err);
    if (!rc) av_input_close(&in);
}

int main(int argc, char **argv) {
#if !defined(__SANITIZE_ADDRESS__)
    struct rlimit as = {4ull << 30, 4ull << 30};
    setrlimit(RLIMIT_AS, &as);
#endif
    snprintf(dir, sizeof dir, "%s", argc > 1 ? argv[1] : "io_hostile");
    mkdir(dir, 0755);
    test_mtx_sizes();
    if (failures) {
        printf("%d failure(s)\n", failures);
        return 1;
    }
    printf("all passed\n");
    return 0;
}
