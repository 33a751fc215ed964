/* Hostile inputs (issue 12) read through io/input.h: Matrix Market size lines that would
 * overflow or allocate gigabytes, zarr stores named .h5ad, and h5ad dataframes whose
 * index is written in an encoding of today's anndata (nullable-string-array,
 * categorical) or cannot be read.
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
#include "io/output.h"
#include "src/util.h"
#include "tests/h5_fixture_util.h"

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

/* ---- dataframe indexes ---- */

typedef enum { IDX_STRINGS, IDX_NULLABLE, IDX_CATEGORICAL, IDX_MISSING, IDX_UNKNOWN } IndexKind;

static const char *const CELLS[3] = {"c0", "c1", "c2"};
static const char *const GENES[2] = {"GeneA", "GeneB"};

/* The dataframe's index in this encoding (the names reversed for the categorical). */
static void write_index(hid_t g, IndexKind kind, const char *const *names, int64_t n) {
    static const int8_t rev[3] = {2, 1, 0};
    if (kind == IDX_STRINGS) fx_strings(g, "_index", names, n, 1);
    if (kind == IDX_NULLABLE) fx_nullable_strings(g, "_index", names, NULL, n);
    if (kind == IDX_CATEGORICAL) fx_categorical(g, "_index", rev + 3 - n, n, names, n);
    if (kind == IDX_UNKNOWN) {
        hid_t u = H5Gcreate2(g, "_index", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        fx_encoding(u, "awkward-array", "0.1.0");
        H5Gclose(u);
    }
}

/* A 3 cells x 2 genes .h5ad (dense X) as anndata 0.13 with pandas 3 writes it: the obs
 * and var indexes in the given encodings, obs columns "kind" (nullable-string-array, one
 * value missing) and "batch" (categorical of strings). */
static const char *index_file(const char *name, IndexKind obs, IndexKind var) {
    static char p[1200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    fx_encoding(f, "anndata", "0.1.0");
    float x[6] = {1, 0, 2, 3, 0, 4};
    hsize_t dims[2] = {3, 2};
    hid_t s = H5Screate_simple(2, dims, NULL);
    hid_t d = H5Dcreate2(f, "X", H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x);
    fx_encoding(d, "array", "0.2.0");
    H5Dclose(d);
    H5Sclose(s);
    hid_t go = fx_dataframe(f, "obs"), gv = fx_dataframe(f, "var");
    write_index(go, obs, CELLS, 3);
    write_index(gv, var, GENES, 2);
    static const char *const kinds[3] = {"T cell", "", "B cell"};
    static const uint8_t mask[3] = {0, 1, 0};
    fx_nullable_strings(go, "kind", kinds, mask, 3);
    static const char *const batches[2] = {"b0", "b1"};
    static const int8_t codes[3] = {0, 1, 1};
    fx_categorical(go, "batch", codes, 3, batches, 2);
    H5Gclose(go);
    H5Gclose(gv);
    H5Fclose(f);
    return p;
}

/* The names of path are want_obs and want_var; obs columns read as written. */
static void expect_names(const char *what, const char *path, const char *const *want_obs,
                         const char *const *want_var) {
    char err[AV_ERRLEN] = "";
    AvInput in;
    if (av_input_open(&in, path, NULL, err) || av_input_read_names(&in, err)) {
        CHECK(0, "%s: %s", what, err);
        return;
    }
    int same = in.n_obs == 3 && in.n_vars == 2;
    for (int i = 0; same && i < 3; i++) same = !strcmp(in.obs_names[i], want_obs[i]);
    for (int j = 0; same && j < 2; j++) same = !strcmp(in.var_names[j], want_var[j]);
    CHECK(same, "%s: names %s.. / %s..", what, in.n_obs ? in.obs_names[0] : "-",
          in.n_vars ? in.var_names[0] : "-");
    AvColumn kind, batch;
    CHECK(av_input_read_obs_column(&in, "kind", &kind, err) == 0 && kind.kind == AV_COL_STRING &&
              !strcmp(kind.strings[0], "T cell") && !strcmp(kind.strings[1], "NA"),
          "%s: nullable obs column: %s", what, err);
    CHECK(av_input_read_obs_column(&in, "batch", &batch, err) == 0 &&
              batch.kind == AV_COL_CATEGORICAL && batch.n_categories == 2 && batch.codes[2] == 1,
          "%s: categorical obs column: %s", what, err);
    av_column_free(&kind);
    av_column_free(&batch);
    if (same)
        printf("ok   %s: %s %s %s / %s %s\n", what, in.obs_names[0], in.obs_names[1],
               in.obs_names[2], in.var_names[0], in.var_names[1]);
    av_input_close(&in);
}

/* A new .h5ad written from path copies its obs and var, and they read back the same. */
static void expect_copied(const char *what, const char *path) {
    char err[AV_ERRLEN] = "", out[1300];
    snprintf(out, sizeof out, "%s.out.h5ad", path);
    AvInput in;
    int rc = av_input_open(&in, path, NULL, err) || av_input_read_names(&in, err);
    AvWriter *w = rc ? NULL : av_writer_create(out, &in, err);
    float z[3] = {0, 1, 2};
    rc = !w || av_writer_obsm(w, "X_scVI", z, 3, 1, err) || av_writer_commit(w, err);
    if (!rc) av_input_close(&in);
    CHECK(rc == 0, "%s: writing %s: %s", what, out, err);
    hid_t f = rc ? -1 : H5Fopen(out, H5F_ACC_RDONLY, H5P_DEFAULT);
    htri_t grp = f >= 0 ? H5Lexists(f, "var/_index/values", H5P_DEFAULT) : -1;
    CHECK(grp > 0, "%s: var/_index copied as it is (a nullable-string-array)", what);
    if (f >= 0) H5Fclose(f);
    if (!rc) printf("ok   %s: obs/var copied into %s\n", what, out);
}

static void test_indexes(void) {
    expect_names("string-array indexes", index_file("idx_strings.h5ad", IDX_STRINGS, IDX_STRINGS),
                 CELLS, GENES);
    const char *nullable = index_file("idx_nullable.h5ad", IDX_NULLABLE, IDX_NULLABLE);
    expect_names("nullable-string-array indexes (anndata 0.13, pandas 3)", nullable, CELLS, GENES);
    expect_copied("nullable-string-array indexes", nullable);
    static const char *const rcells[3] = {"c2", "c1", "c0"}, *const rgenes[2] = {"GeneB", "GeneA"};
    expect_names("categorical indexes",
                 index_file("idx_categorical.h5ad", IDX_CATEGORICAL, IDX_CATEGORICAL), rcells,
                 rgenes);
    expect_open_error("obs index named but missing",
                      index_file("idx_missing.h5ad", IDX_MISSING, IDX_STRINGS),
                      "obs index is missing or unreadable");
    expect_open_error("var index in an unknown encoding",
                      index_file("idx_unknown.h5ad", IDX_STRINGS, IDX_UNKNOWN),
                      "var index is missing or unreadable");
}

/* A folder named like an .h5ad that is a zarr store (v2: .zgroup, v3: zarr.json). */
static void test_zarr(void) {
    static const char *const marks[2] = {".zgroup", "zarr.json"};
    for (int v = 0; v < 2; v++) {
        char p[1200];
        snprintf(p, sizeof p, "%s/store_v%d.h5ad", dir, v + 2);
        mkdir(p, 0755);
        write_text(p, marks[v], "{}\n");
        expect_open_error(marks[v], p, "a zarr store");
    }
}

/* Antibody-like feature names are counted only where the file has no feature types. */
static void test_untyped_antibodies(void) {
    const char *head = "%%MatrixMarket matrix coordinate integer general\n3 2 1\n1 1 5\n";
    char p[1200], err[AV_ERRLEN] = "";
    snprintf(p, sizeof p, "%s/mtx_adt", dir);
    mkdir(p, 0755);
    write_text(p, "features.tsv", "a\tCD3_TotalSeqB\nb\tADTRP\nc\tADT_CD4\n");
    write_text(p, "barcodes.tsv", "AAA-1\nCCC-1\n");
    write_text(p, "matrix.mtx", head);
    AvInput in;
    const char *example = NULL;
    int rc = av_input_open(&in, p, NULL, err) || av_input_read_names(&in, err);
    int64_t n = rc ? -1 : av_input_untyped_antibodies(&in, &example);
    CHECK(n == 2 && example && !strcmp(example, "CD3_TotalSeqB"),
          "untyped: %lld antibody-like (%s), want 2 (CD3_TotalSeqB; ADTRP is a gene): %s",
          (long long)n, example ? example : "-", err);
    if (n == 2) printf("ok   untyped features: 2 antibody-like, e.g. %s\n", example);
    if (!rc) av_input_close(&in);
    rc = av_input_open(&in, mtx_folder("mtx_typed", head), NULL, err) ||
         av_input_read_names(&in, err);
    CHECK(!rc && av_input_untyped_antibodies(&in, &example) == 0, "typed features: %s", err);
    if (!rc) av_input_close(&in);
}

int main(int argc, char **argv) {
#if !defined(__SANITIZE_ADDRESS__)
    struct rlimit as = {4ull << 30, 4ull << 30};
    setrlimit(RLIMIT_AS, &as);
#endif
    snprintf(dir, sizeof dir, "%s", argc > 1 ? argv[1] : "io_hostile");
    mkdir(dir, 0755);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    test_mtx_sizes();
    test_indexes();
    test_zarr();
    test_untyped_antibodies();
    if (failures) {
        printf("%d failure(s)\n", failures);
        return 1;
    }
    printf("all passed\n");
    return 0;
}
