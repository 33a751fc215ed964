/* Writes the HDF5 inputs of tests/fuzz/regressions.sh: minimal files that reproduce what
 * the fuzz targets found (each case named after its finding in docs/fuzzing.md), so that
 * no binary file is committed.
 *   make_regressions DIR                     the cases that need no model file
 *   make_regressions model MODEL.h5 DIR      the model-file cases, each a copy of MODEL.h5
 *                                            (written by atlasvi train) with one change */
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char dir[4096];

static hid_t create(const char *name) {
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        fprintf(stderr, "make_regressions: cannot create %s\n", p);
        exit(1);
    }
    return f;
}

static void attr_str(hid_t o, const char *k, const char *v) {
    hid_t t = H5Tcopy(H5T_C_S1), s = H5Screate(H5S_SCALAR);
    H5Tset_size(t, strlen(v) + 1);
    hid_t a = H5Acreate2(o, k, t, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, v);
    H5Aclose(a);
    H5Sclose(s);
    H5Tclose(t);
}

static void attr_i64(hid_t o, const char *k, const int64_t *v, hsize_t n) {
    hid_t s = H5Screate_simple(1, &n, NULL);
    hid_t a = H5Acreate2(o, k, H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, v);
    H5Aclose(a);
    H5Sclose(s);
}

static void dset(hid_t loc, const char *name, hid_t file_t, hid_t mem_t, hsize_t n, const void *v) {
    hid_t s = H5Screate_simple(1, &n, NULL);
    hid_t d = H5Dcreate2(loc, name, file_t, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, mem_t, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    H5Dclose(d);
    H5Sclose(s);
}

static void strings(hid_t loc, const char *name, int n, const char *prefix) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, 16);
    char *buf = calloc((size_t)n ? (size_t)n : 1, 16);
    for (int i = 0; i < n; i++) snprintf(buf + 16 * i, 16, "%s%d", prefix, i);
    dset(loc, name, t, t, (hsize_t)n, buf);
    free(buf);
    H5Tclose(t);
}

/* A chunked vlen string dataset of n strings, nothing written. */
static void big_strings(hid_t loc, const char *name, hsize_t n) {
    hsize_t chunk = 1;
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    hid_t s = H5Screate_simple(1, &n, NULL), p = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(p, 1, &chunk);
    hid_t d = H5Dcreate2(loc, name, t, s, H5P_DEFAULT, p, H5P_DEFAULT);
    if (d < 0) {
        fprintf(stderr, "make_regressions: cannot create %s\n", name);
        exit(1);
    }
    H5Dclose(d);
    H5Pclose(p);
    H5Sclose(s);
    H5Tclose(t);
}

/* obs and var dataframes with string indexes, as anndata writes them (n < 0: an index
 * declaring 2^40 strings, nothing stored) */
static void frames(hid_t f, int n_obs, int n_vars) {
    const char *g[] = {"obs", "var"};
    int n[] = {n_obs, n_vars};
    for (int k = 0; k < 2; k++) {
        hid_t gr = H5Gcreate2(f, g[k], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        attr_str(gr, "encoding-type", "dataframe");
        attr_str(gr, "encoding-version", "0.2.0");
        attr_str(gr, "_index", "_index");
        if (n[k] < 0)
            big_strings(gr, "_index", (hsize_t)1 << 40);
        else
            strings(gr, "_index", n[k], g[k]);
        H5Gclose(gr);
    }
}

/* An h5ad with a CSR X of the given shape attribute, indptr, indices and data. */
static void h5ad_csr(const char *name, int64_t r, int64_t c, const int64_t *indptr, hsize_t np,
                     int nnz, int n_obs_names, int n_var_names) {
    hid_t f = create(name);
    attr_str(f, "encoding-type", "anndata");
    attr_str(f, "encoding-version", "0.1.0");
    hid_t x = H5Gcreate2(f, "X", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    attr_str(x, "encoding-type", "csr_matrix");
    attr_str(x, "encoding-version", "0.1.0");
    int64_t shape[2] = {r, c};
    attr_i64(x, "shape", shape, 2);
    dset(x, "indptr", H5T_STD_I64LE, H5T_NATIVE_INT64, np, indptr);
    int32_t idx[4] = {0, 1, 0, 1};
    float val[4] = {1, 2, 3, 4};
    dset(x, "indices", H5T_STD_I32LE, H5T_NATIVE_INT32, (hsize_t)nnz, idx);
    dset(x, "data", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, (hsize_t)nnz, val);
    H5Gclose(x);
    frames(f, n_obs_names, n_var_names);
    H5Fclose(f);
}

/* A chunked 2-D float dataset of any declared shape, nothing written (a few KB on disk). */
static void big_dense(hid_t loc, const char *name, hsize_t d0, hsize_t d1) {
    hsize_t dims[2] = {d0, d1}, chunk[2] = {1, 1};
    hid_t s = H5Screate_simple(2, dims, NULL), p = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(p, 2, chunk);
    hid_t d = H5Dcreate2(loc, name, H5T_IEEE_F32LE, s, H5P_DEFAULT, p, H5P_DEFAULT);
    if (d < 0) {
        fprintf(stderr, "make_regressions: cannot create %s %llu x %llu\n", name,
                (unsigned long long)d0, (unsigned long long)d1);
        exit(1);
    }
    H5Dclose(d);
    H5Pclose(p);
    H5Sclose(s);
}

static void copy_file(const char *from, const char *name, char *to, size_t len) {
    snprintf(to, len, "%s/%s", dir, name);
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    if (!a || !b) {
        fprintf(stderr, "make_regressions: cannot copy %s to %s\n", from, to);
        exit(1);
    }
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0) fwrite(buf, 1, n, b);
    fclose(a);
    if (fclose(b)) exit(1);
}

/* A copy of the model file with dataset `name` replaced by a rows x cols float array. */
static void model_with_array(const char *model, const char *out, const char *name, hsize_t rows,
                             hsize_t cols) {
    char p[4200];
    copy_file(model, out, p, sizeof p);
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0 || H5Ldelete(f, name, H5P_DEFAULT) < 0) {
        fprintf(stderr, "make_regressions: %s: no %s\n", model, name);
        exit(1);
    }
    hsize_t dims[2] = {rows, cols}, chunk[2] = {1, 1};
    hid_t s = H5Screate_simple(2, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (rows * cols > 1024) H5Pset_chunk(dcpl, 2, chunk); /* declared, nothing stored */
    hid_t d = H5Dcreate2(f, name, H5T_IEEE_F32LE, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (d < 0) {
        fprintf(stderr, "make_regressions: cannot create %s\n", name);
        exit(1);
    }
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(s);
    H5Fclose(f);
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "model")) {
        snprintf(dir, sizeof dir, "%s", argv[3]);
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        /* F7: history/elbo_train of 0 x 50 values: the history loop read 50 epochs from
         * data[] (heap-buffer-overflow read, src/app_model.c) */
        model_with_array(argv[2], "model_history_0rows.h5", "history/elbo_train", 0, 50);
        model_with_array(argv[2], "model_history_other_0rows.h5", "history/kl_weight", 0, 50);
        /* F8: an array declaring 2^40 x 2^20 values, nothing stored: load_item allocated
         * them (4 EB: allocation-size-too-big; "out of memory" exit in atlasvi), io/blob.c */
        model_with_array(argv[2], "model_array_huge.h5", "history/kl_weight", (hsize_t)1 << 40,
                         (hsize_t)1 << 20);
        model_with_array(argv[2], "model_array_2e9.h5", "history/kl_weight", 1, (hsize_t)2 << 30);
        /* F9: a weight of the wrong shape: av_model_load's failure path freed the setup and
         * optimiser state it had not initialised (SEGV in av_setup_free; `atlasvi export`
         * passes an uninitialised setup) */
        model_with_array(argv[2], "model_bad_weight.h5",
                         "params/decoder.px_decoder.fc_layers.Layer 0.0.bias", 1, 3);
        return 0;
    }
    if (argc != 2) {
        fprintf(stderr, "usage: make_regressions DIR | make_regressions model MODEL.h5 DIR\n");
        return 2;
    }
    snprintf(dir, sizeof dir, "%s", argv[1]);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);

    /* F4: indptr[0] near INT64_MIN: read_indptr rebased before checking (signed overflow) */
    int64_t ip_min[3] = {INT64_MIN + 1, 1, 2};
    h5ad_csr("h5ad_indptr_min.h5ad", 2, 2, ip_min, 3, 2, 2, 2);
    /* F5: shape attribute INT64_MAX x 2: shape + 1 (expected indptr length) overflowed */
    int64_t ip[3] = {0, 1, 2};
    h5ad_csr("h5ad_shape_max.h5ad", INT64_MAX, 2, ip, 3, 2, 2, 2);
    h5ad_csr("h5ad_shape_max_cols.h5ad", 2, INT64_MAX, ip, 3, 2, 2, 2);

    /* F6: dense X declared 3*2^30 x 2^32: n_obs * n_vars overflowed (and n_vars > INT32_MAX) */
    hid_t f = create("h5ad_dense_huge.h5ad");
    attr_str(f, "encoding-type", "anndata");
    attr_str(f, "encoding-version", "0.1.0");
    big_dense(f, "X", (hsize_t)3 << 30, (hsize_t)1 << 32);
    frames(f, 2, 2);
    H5Fclose(f);

    /* F6 (loom): /matrix declared 2^32 genes x 3*2^30 cells */
    f = create("loom_huge.loom");
    big_dense(f, "matrix", (hsize_t)1 << 32, (hsize_t)3 << 30);
    H5Gclose(H5Gcreate2(f, "col_attrs", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Gclose(H5Gcreate2(f, "row_attrs", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Fclose(f);

    /* F11: string datasets declaring 2^40 strings, nothing stored: h5u_read_strings
     * allocated 2^40 pointers first (10x barcodes; h5ad obs/_index) */
    f = create("tenx_barcodes_huge.h5");
    hid_t g = H5Gcreate2(f, "matrix", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int64_t sh2[2] = {2, 2}, ip2[3] = {0, 1, 2};
    dset(g, "shape", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, sh2);
    dset(g, "indptr", H5T_STD_I64LE, H5T_NATIVE_INT64, 3, ip2);
    int32_t idx2[2] = {0, 1};
    float val2[2] = {1, 2};
    dset(g, "indices", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, idx2);
    dset(g, "data", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, val2);
    big_strings(g, "barcodes", (hsize_t)1 << 40);
    hid_t fg = H5Gcreate2(g, "features", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    strings(fg, "id", 2, "id");
    strings(fg, "name", 2, "g");
    H5Gclose(fg);
    H5Gclose(g);
    H5Fclose(f);
    int64_t ip3[3] = {0, 1, 2};
    h5ad_csr("h5ad_index_huge.h5ad", 2, 2, ip3, 3, 2, -1, 2);

    /* F5 (10x v3): matrix/shape = (2, INT64_MAX): n_barcodes + 1 overflowed */
    f = create("tenx_shape_max.h5");
    hid_t m = H5Gcreate2(f, "matrix", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int64_t sh[2] = {2, INT64_MAX};
    dset(m, "shape", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, sh);
    dset(m, "indptr", H5T_STD_I64LE, H5T_NATIVE_INT64, 3, ip);
    int32_t idx[2] = {0, 1};
    float val[2] = {1, 2};
    dset(m, "indices", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, idx);
    dset(m, "data", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, val);
    strings(m, "barcodes", 2, "bc");
    hid_t ft = H5Gcreate2(m, "features", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    strings(ft, "id", 2, "id");
    strings(ft, "name", 2, "g");
    H5Gclose(ft);
    H5Gclose(m);
    H5Fclose(f);
    return 0;
}
