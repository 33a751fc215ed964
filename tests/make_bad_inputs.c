/* Writes the inputs of the CLI bad-input tests (tests/cli_bad.sh) with io/'s streaming
 * CSR writer, so that no Python is needed:
 *
 *   make_bad_inputs data DIR
 *     base.h5ad      200 cells x 50 genes, integer counts, obs 'batch' (b0, b1): trains
 *     neg.h5ad       as base, one count of -1 in the last cell (rank 1's shard under np 2)
 *     nan.h5ad       as base, a NaN in the first cell
 *     inf.h5ad       as base, +Inf in the last cell
 *     huge.h5ad      as base, one count of 3.4e38 (finite, integer: training diverges)
 *     zero.h5ad      as base, the last cell has no counts at all
 *     frac.h5ad      as base, five counts of x.5 (scvi-tools warns, trains)
 *     genes.h5ad     as base, other gene names (other_0, ...)
 *     fewgenes.h5ad  40 genes instead of 50
 *     newbatch.h5ad  as base, batch categories b0, b9 (b9 unknown to a model of base)
 *     nobatch.h5ad   as base, no obs columns
 *     nullgenes.h5ad as genes.h5ad, its var index a nullable-string-array (anndata 0.13
 *                    with pandas 3)
 *     adt_mtx/       a Matrix Market folder without feature types whose last 3 of 50
 *                    features are antibody tags (CD3_TotalSeqB, ...): trains, with a warning
 *     notmodel.h5    an HDF5 file with one dataset, not a model
 *   make_bad_inputs version MODEL.h5 OUT.h5
 *     copies a model file and sets its atlasvi_blob_version attribute to 99
 *   make_bad_inputs model MODEL.h5 DIR
 *     crafted copies of a good model file (base_model.h5 of base.h5ad) in DIR:
 *     m_layers.h5       attribute n_layers = 100000
 *     m_latent_neg.h5   attribute n_latent = -3
 *     m_latent_12.h5    attribute n_latent = 12 (in range, the weights say 10)
 *     m_hidden_text.h5  attribute n_hidden = 12abc
 *     m_param_huge.h5   params/decoder.px_scale_decoder.0.weight of shape (2^31, 2^31),
 *                       chunked, no chunk written
 *     m_param_unstored.h5  the same array with its own shape (50, 128), nothing stored
 *     m_history_huge.h5 history/elbo_train of shape (2^62, 4), the same
 *     m_batch_3.h5      registry/categories_0 with 3 batches, n_batch still 2
 *     m_nan.h5          px_r rewritten with a NaN (what a diverged run used to save) */
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/out_h5.h"
#include "io/output.h"
#include "src/data.h"
#include "src/util.h"
#include "tests/h5_fixture_util.h"

#define N_CELLS 200
#define N_GENES 50

typedef enum { PLAIN, NEG, NAN_, INF, HUGE, ZERO, FRAC, GENES, FEWGENES, NEWBATCH, NOBATCH } Kind;

static uint64_t rng_state = 12345;
static uint32_t next_u32(void) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng_state >> 33);
}

/* The same counts for every kind (the RNG restarts), then the kind's change. */
static int write_file(const char *dir, const char *name, Kind kind) {
    char path[4096], err[AV_ERRLEN] = "";
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int64_t g = kind == FEWGENES ? 40 : N_GENES;
    char **var_names = NULL;
    if (kind == GENES) {
        var_names = av_malloc(sizeof(char *) * (size_t)g);
        for (int64_t j = 0; j < g; j++) {
            char buf[32];
            snprintf(buf, sizeof buf, "other_%lld", (long long)j);
            var_names[j] = av_strdup(buf);
        }
    }
    AvCsrWriter *w = av_csr_writer_create(path, g, var_names, err);
    if (var_names) av_free_strings(var_names, g);
    if (!w) {
        fprintf(stderr, "make_bad_inputs: %s\n", err);
        return 1;
    }
    rng_state = 12345;
    AvCsr m = {0};
    m.n_rows = N_CELLS;
    m.n_cols = g;
    m.indptr = av_malloc(sizeof(int64_t) * (N_CELLS + 1));
    m.indices = av_malloc(sizeof(int32_t) * (size_t)(N_CELLS * g));
    m.data = av_malloc(sizeof(float) * (size_t)(N_CELLS * g));
    int64_t nnz = 0;
    m.indptr[0] = 0;
    int n_frac = 0;
    for (int64_t i = 0; i < N_CELLS; i++) {
        int64_t row_start = nnz;
        for (int64_t j = 0; j < g; j++) {
            uint32_t u = next_u32();
            if (u % 100 < 45) { /* ~45% non-zero, counts 1..12, more for low genes */
                float v = (float)(1 + (u >> 8) % (j < 10 ? 12 : 5));
                if (kind == ZERO && i == N_CELLS - 1) continue;
                if (kind == FRAC && i % 40 == 7 && n_frac < 5 && nnz > row_start) {
                    v += 0.5f;
                    n_frac++;
                }
                m.indices[nnz] = (int32_t)j;
                m.data[nnz++] = v;
            }
        }
        if (nnz == row_start && !(kind == ZERO && i == N_CELLS - 1)) { /* never empty */
            m.indices[nnz] = 0;
            m.data[nnz++] = 1;
        }
        m.indptr[i + 1] = nnz;
    }
    int64_t last = m.indptr[N_CELLS - 1];
    if (kind == NEG) m.data[last] = -1.0f;
    if (kind == NAN_) m.data[0] = NAN;
    if (kind == INF) m.data[last] = INFINITY;
    if (kind == HUGE) m.data[last] = 3.4e38f;
    int rc = av_csr_writer_append(w, &m, err);
    if (rc) {
        av_csr_writer_abort(w);
    } else {
        int32_t codes[N_CELLS];
        for (int i = 0; i < N_CELLS; i++) codes[i] = i % 3 == 0;
        char *cats[2] = {"b0", kind == NEWBATCH ? "b9" : "b1"};
        AvColumn col = {0};
        col.name = "batch";
        col.kind = AV_COL_CATEGORICAL;
        col.n = N_CELLS;
        col.codes = codes;
        col.n_categories = 2;
        col.categories = cats;
        rc = av_csr_writer_finish(w, NULL, &col, kind == NOBATCH ? 0 : 1, err);
    }
    if (rc) fprintf(stderr, "make_bad_inputs: %s\n", err);
    av_csr_free(&m);
    return rc ? 1 : 0;
}

static int write_not_model(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/notmodel.h5", dir);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return 1;
    hsize_t dims[2] = {7, 3};
    double v[21];
    for (int i = 0; i < 21; i++) v[i] = (double)(next_u32() % 1000) / 7.0;
    hid_t sp = H5Screate_simple(2, dims, NULL);
    hid_t d = H5Dcreate2(f, "random", H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t e = d < 0 ? -1 : H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    if (d >= 0) H5Dclose(d);
    H5Sclose(sp);
    return (H5Fclose(f) < 0 || e < 0) ? 1 : 0;
}

static int copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb"), *b = a ? fopen(to, "wb") : NULL;
    int rc = !a || !b;
    char buf[1 << 16];
    size_t n;
    while (!rc && (n = fread(buf, 1, sizeof buf, a)) > 0)
        if (fwrite(buf, 1, n, b) != n) rc = 1;
    if (a) fclose(a);
    if (b && fclose(b)) rc = 1;
    return rc;
}

static int other_version(const char *model, const char *out) {
    if (copy_file(model, out)) {
        fprintf(stderr, "make_bad_inputs: cannot copy %s to %s\n", model, out);
        return 1;
    }
    hid_t f = H5Fopen(out, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) return 1;
    hid_t a = H5Aopen(f, "atlasvi_blob_version", H5P_DEFAULT);
    int64_t v = 99;
    herr_t e = a < 0 ? -1 : H5Awrite(a, H5T_NATIVE_INT64, &v);
    if (a >= 0) H5Aclose(a);
    if (H5Fclose(f) < 0 || e < 0) {
        fprintf(stderr, "make_bad_inputs: cannot set the version of %s\n", out);
        return 1;
    }
    return 0;
}

static int set_attr(hid_t f, const char *key, const char *value) {
    if (H5Aexists(f, key) > 0 && H5Adelete(f, key) < 0) return 1;
    return out_attr_str(f, key, value) ? 1 : 0;
}

/* Replaces a dataset by a chunked float one of the given shape with no chunk written. */
static int set_unstored_array(hid_t f, const char *name, hsize_t rows, hsize_t cols) {
    if (H5Ldelete(f, name, H5P_DEFAULT) < 0) return 1;
    hsize_t dims[2] = {rows, cols}, chunk[2] = {1, cols < 1024 ? cols : 1024};
    hid_t sp = H5Screate_simple(2, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 2, chunk);
    hid_t d = H5Dcreate2(f, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(sp);
    if (d < 0) return 1;
    return H5Dclose(d) < 0;
}

/* Writes NaN over the first value of a float dataset. */
static int set_nan(hid_t f, const char *name) {
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) return 1;
    hsize_t start[2] = {0, 0}, count[2] = {1, 1};
    hid_t fs = H5Dget_space(d), ms = H5Screate_simple(2, count, NULL);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    float v = NAN;
    herr_t e = H5Dwrite(d, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, &v);
    H5Sclose(ms);
    H5Sclose(fs);
    H5Dclose(d);
    return e < 0;
}

static int set_strings(hid_t f, const char *name, int64_t n, const char **items) {
    if (H5Ldelete(f, name, H5P_DEFAULT) < 0) return 1;
    hsize_t dim = (hsize_t)n;
    hid_t sp = H5Screate_simple(1, &dim, NULL), t = out_vlen_str_type();
    hid_t d = H5Dcreate2(f, name, t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t e = d < 0 ? -1 : H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, items);
    if (d >= 0) H5Dclose(d);
    H5Tclose(t);
    H5Sclose(sp);
    return e < 0;
}

typedef enum { ATTR, UNSTORED, STRINGS, NAN_VALUE } Craft;

/* One crafted copy of a good model: attribute key = value, dataset name of shape
 * rows x cols with nothing stored, or string list name of n items. */
static int crafted_model(const char *model, const char *dir, const char *out, Craft how,
                         const char *name, const char *value, hsize_t rows, hsize_t cols) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, out);
    if (copy_file(model, path)) {
        fprintf(stderr, "make_bad_inputs: cannot copy %s to %s\n", model, path);
        return 1;
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) return 1;
    const char *batches[] = {"b0", "b1", "b2"};
    int rc = how == ATTR       ? set_attr(f, name, value)
             : how == UNSTORED ? set_unstored_array(f, name, rows, cols)
             : how == STRINGS  ? set_strings(f, name, (int64_t)rows, batches)
                               : set_nan(f, name);
    if ((H5Fclose(f) < 0 || rc)) {
        fprintf(stderr, "make_bad_inputs: cannot write %s\n", path);
        return 1;
    }
    return 0;
}

static int crafted_models(const char *model, const char *dir) {
    const hsize_t g31 = (hsize_t)1 << 31, g62 = (hsize_t)1 << 62;
    int rc = crafted_model(model, dir, "m_layers.h5", ATTR, "n_layers", "100000", 0, 0);
    rc |= crafted_model(model, dir, "m_latent_neg.h5", ATTR, "n_latent", "-3", 0, 0);
    rc |= crafted_model(model, dir, "m_latent_12.h5", ATTR, "n_latent", "12", 0, 0);
    rc |= crafted_model(model, dir, "m_hidden_text.h5", ATTR, "n_hidden", "12abc", 0, 0);
    rc |= crafted_model(model, dir, "m_param_huge.h5", UNSTORED,
                        "params/decoder.px_scale_decoder.0.weight", NULL, g31, g31);
    rc |= crafted_model(model, dir, "m_param_unstored.h5", UNSTORED,
                        "params/decoder.px_scale_decoder.0.weight", NULL, 50, 128);
    rc |= crafted_model(model, dir, "m_history_huge.h5", UNSTORED, "history/elbo_train", NULL, g62,
                        4);
    rc |= crafted_model(model, dir, "m_batch_3.h5", STRINGS, "registry/categories_0", NULL, 3, 0);
    rc |= crafted_model(model, dir, "m_nan.h5", NAN_VALUE, "params/px_r", NULL, 0, 0);
    return rc;
}

/* nullgenes.h5ad: genes.h5ad with var/_index rewritten as a nullable-string-array. */
static int nullable_var_index(const char *dir) {
    char from[4096], to[4096];
    snprintf(from, sizeof from, "%s/genes.h5ad", dir);
    snprintf(to, sizeof to, "%s/nullgenes.h5ad", dir);
    if (copy_file(from, to)) return 1;
    hid_t f = H5Fopen(to, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t g = f < 0 ? -1 : H5Gopen2(f, "var", H5P_DEFAULT);
    if (g < 0 || H5Ldelete(g, "_index", H5P_DEFAULT) < 0) return 1;
    char names[N_GENES][32];
    const char *items[N_GENES];
    for (int j = 0; j < N_GENES; j++) {
        snprintf(names[j], sizeof names[j], "other_%d", j);
        items[j] = names[j];
    }
    fx_nullable_strings(g, "_index", items, NULL, N_GENES);
    H5Gclose(g);
    return H5Fclose(f) < 0;
}

/* adt_mtx/: 200 cells x 50 features (two-column features.tsv: no feature_type), the last
 * three named like CITE-seq antibody tags. */
static int write_adt_mtx(const char *dir) {
    static const char *const adt[3] = {"CD3_TotalSeqB", "CD4_TotalSeqB", "ADT_CD8"};
    char path[4096];
    snprintf(path, sizeof path, "%s/adt_mtx", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/adt_mtx/features.tsv", dir);
    FILE *f = fopen(path, "w");
    for (int j = 0; f && j < N_GENES; j++) {
        if (j >= N_GENES - 3)
            fprintf(f, "ab%d\t%s\n", j, adt[j - (N_GENES - 3)]);
        else
            fprintf(f, "ENSG%d\tgene_%d\n", j, j);
    }
    int rc = !f || fclose(f);
    snprintf(path, sizeof path, "%s/adt_mtx/barcodes.tsv", dir);
    f = fopen(path, "w");
    for (int i = 0; f && i < N_CELLS; i++) fprintf(f, "cell_%d\n", i);
    rc |= !f || fclose(f);
    int nnz = 0;
    for (int i = 0; i < N_CELLS; i++)
        for (int j = 0; j < N_GENES; j++) nnz += (i + j) % 3 == 0;
    snprintf(path, sizeof path, "%s/adt_mtx/matrix.mtx", dir);
    f = fopen(path, "w");
    if (f)
        fprintf(f, "%%%%MatrixMarket matrix coordinate integer general\n%d %d %d\n", N_GENES,
                N_CELLS, nnz);
    for (int i = 0; f && i < N_CELLS; i++)
        for (int j = 0; j < N_GENES; j++)
            if ((i + j) % 3 == 0) fprintf(f, "%d %d %d\n", j + 1, i + 1, 1 + (i * 7 + j) % 9);
    rc |= !f || fclose(f);
    if (rc) fprintf(stderr, "make_bad_inputs: cannot write %s/adt_mtx\n", dir);
    return rc;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "version")) return other_version(argv[2], argv[3]);
    if (argc == 4 && !strcmp(argv[1], "model")) return crafted_models(argv[2], argv[3]);
    if (argc != 3 || strcmp(argv[1], "data")) {
        fprintf(stderr, "usage: make_bad_inputs data DIR | version MODEL.h5 OUT.h5 | model "
                        "MODEL.h5 DIR\n");
        return 2;
    }
    const char *dir = argv[2];
    static const struct {
        const char *name;
        Kind kind;
    } files[] = {{"base.h5ad", PLAIN},        {"neg.h5ad", NEG},        {"nan.h5ad", NAN_},
                 {"inf.h5ad", INF},           {"huge.h5ad", HUGE},      {"zero.h5ad", ZERO},
                 {"frac.h5ad", FRAC},         {"genes.h5ad", GENES},    {"fewgenes.h5ad", FEWGENES},
                 {"newbatch.h5ad", NEWBATCH}, {"nobatch.h5ad", NOBATCH}};
    int rc = 0;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        rc |= write_file(dir, files[i].name, files[i].kind);
    rc |= nullable_var_index(dir);
    rc |= write_adt_mtx(dir);
    rc |= write_not_model(dir);
    return rc;
}
