/* Writers of io/output.h: structure of the files (formats.md 1.2/1.10) checked with HDF5,
 * atomic writes, errors. Leaves its files in argv[1] for tests/check_h5ad.py (anndata). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/blob.h"
#include "io/output.h"
#include "src/util.h"
#include "tests/test_output_util.h"

static char dir[1024];

static char *pathf(const char *name) {
    static char buf[4][1200];
    static int k = 0;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static int exists(const char *p) {
    return access(p, F_OK) == 0;
}

/* Temporaries of the output `name` in dir: files named "<name>.tmp...". */
static int count_tmps(const char *name) {
    DIR *d = opendir(dir);
    int n = 0;
    size_t len = strlen(name);
    for (struct dirent *e; d && (e = readdir(d));)
        n += !strncmp(e->d_name, name, len) && !strncmp(e->d_name + len, ".tmp", 4);
    if (d) closedir(d);
    return n;
}

/* Expected obsm value of cell i, column j (check_h5ad.py uses the same formula). */
static float obsm_value(long long i, long long j, float scale) {
    return scale * ((float)i * 0.25f - (float)j * 1.5f);
}

static float *obsm_matrix(long long n, long long k, float scale) {
    float *m = malloc((size_t)(n * k) * sizeof *m + 1);
    for (long long i = 0; i < n; i++)
        for (long long j = 0; j < k; j++) m[i * k + j] = obsm_value(i, j, scale);
    return m;
}

/* A small CSR: row r has entries at columns (r + 3t) % g for t < r % 4, value r + t + 1. */
static void make_rows(AvCsr *m, long long r0, long long n, long long g) {
    m->n_rows = n;
    m->n_cols = g;
    m->indptr = malloc((size_t)(n + 1) * sizeof *m->indptr);
    m->indices = malloc((size_t)(n * 4 + 1) * sizeof *m->indices);
    m->data = malloc((size_t)(n * 4 + 1) * sizeof *m->data);
    int64_t k = 0;
    m->indptr[0] = 0;
    for (long long i = 0; i < n; i++) {
        long long r = r0 + i, cnt = r % 4;
        int cols[4] = {0, 0, 0, 0};
        int c = 0;
        for (long long t = 0; t < cnt; t++) cols[c++] = (int)((r + 3 * t) % g);
        /* sort (tiny) and keep unique */
        for (int a = 0; a < c; a++)
            for (int b = a + 1; b < c; b++)
                if (cols[b] < cols[a]) {
                    int tmp = cols[a];
                    cols[a] = cols[b];
                    cols[b] = tmp;
                }
        for (int a = 0; a < c; a++) {
            if (a > 0 && cols[a] == cols[a - 1]) continue;
            m->indices[k] = cols[a];
            m->data[k] = (float)(r + a + 1);
            k++;
        }
        m->indptr[i + 1] = k;
    }
}

#define N_CELLS 50
#define N_GENES 12

static void make_columns(AvColumn *cols) {
    static char *cats[] = {"batch_0", "batch_1", "batch_2"};
    memset(cols, 0, 3 * sizeof *cols);
    cols[0].name = "batch";
    cols[0].kind = AV_COL_CATEGORICAL;
    cols[0].n = N_CELLS;
    cols[0].codes = malloc(N_CELLS * sizeof(int32_t));
    for (int i = 0; i < N_CELLS; i++) cols[0].codes[i] = i % 3;
    cols[0].n_categories = 3;
    cols[0].categories = cats;
    cols[1].name = "n_counts";
    cols[1].kind = AV_COL_NUMERIC;
    cols[1].n = N_CELLS;
    cols[1].values = malloc(N_CELLS * sizeof(double));
    for (int i = 0; i < N_CELLS; i++) cols[1].values[i] = i * 1.5;
    cols[2].name = "barcode";
    cols[2].kind = AV_COL_STRING;
    cols[2].n = N_CELLS;
    cols[2].strings = malloc(N_CELLS * sizeof(char *));
    for (int i = 0; i < N_CELLS; i++) {
        cols[2].strings[i] = malloc(32);
        snprintf(cols[2].strings[i], 32, "BC-%d-\xc3\xa9", i); /* UTF-8 */
    }
}

static void free_columns(AvColumn *cols) {
    free(cols[0].codes);
    free(cols[1].values);
    for (int i = 0; i < N_CELLS; i++) free(cols[2].strings[i]);
    free(cols[2].strings);
}

/* 1: streaming CSR writer -> csr.h5ad (a "modern h5ad" source for the rest). */
static void test_csr_writer(void) {
    char err[AV_ERRLEN] = "";
    const char *p = pathf("csr.h5ad");
    unlink(p);
    char *var[N_GENES];
    for (int g = 0; g < N_GENES; g++) {
        var[g] = malloc(16);
        snprintf(var[g], 16, "G%d", g);
    }
    AvCsrWriter *w = av_csr_writer_create(p, N_GENES, var, err);
    TU_CHECK(w != NULL, "%s", err);
    if (!w) return;
    TU_CHECK(count_tmps("csr.h5ad") == 1 && !exists(p), "writes to a .tmp name first");
    AvCsr a, b;
    make_rows(&a, 0, 20, N_GENES);
    make_rows(&b, 20, N_CELLS - 20, N_GENES);
    TU_CHECK(av_csr_writer_append(w, &a, err) == 0, "%s", err);
    TU_CHECK(av_csr_writer_append(w, &b, err) == 0, "%s", err);
    /* a bad chunk is refused and leaves the writer usable */
    AvCsr bad;
    make_rows(&bad, 7, 1, N_GENES);
    bad.indices[0] = N_GENES + 3;
    TU_CHECK(av_csr_writer_append(w, &bad, err) != 0, "out-of-range index refused");
    TU_CHECK(strstr(err, "column index") != NULL, "message: %s", err);
    av_csr_free(&bad);
    TU_CHECK(av_csr_writer_rows(w) == N_CELLS, "rows");
    long long nnz = av_csr_nnz(&a) + av_csr_nnz(&b);
    TU_CHECK(av_csr_writer_nnz(w) == nnz, "nnz");
    AvColumn cols[3];
    make_columns(cols);
    char *obs[N_CELLS];
    for (int i = 0; i < N_CELLS; i++) {
        obs[i] = malloc(16);
        snprintf(obs[i], 16, "c%d", i);
    }
    TU_CHECK(av_csr_writer_finish(w, obs, cols, 3, err) == 0, "%s", err);
    TU_CHECK(exists(p) && count_tmps("csr.h5ad") == 0, "renamed into place");

    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    TU_CHECK(f >= 0, "reopen");
    TU_CHECK(tu_enc(f, "/", "anndata", "0.1.0"), "root encoding");
    TU_CHECK(tu_enc(f, "X", "csr_matrix", "0.1.0"), "X encoding");
    TU_CHECK(tu_shape(f, "X", N_CELLS, N_GENES), "X shape i64");
    TU_CHECK(tu_dset(f, "X/data", H5T_FLOAT, 4, 1, nnz, 0), "data f32");
    TU_CHECK(tu_dset(f, "X/indices", H5T_INTEGER, 4, 1, nnz, 0), "indices i32");
    /* int32 like the indices while nnz fits: scipy then indexes rows without casting */
    TU_CHECK(tu_dset(f, "X/indptr", H5T_INTEGER, 4, 1, N_CELLS + 1, 0), "indptr i32");
    long long n;
    long long *ip = tu_read_all(f, "X/indptr", H5T_NATIVE_LLONG, 8, &n);
    float *dv = tu_read_all(f, "X/data", H5T_NATIVE_FLOAT, 4, &n);
    int *iv = tu_read_all(f, "X/indices", H5T_NATIVE_INT, 4, &n);
    int same = ip && dv && iv;
    for (int i = 0; i < 20 && same; i++) {
        same = ip[i + 1] == a.indptr[i + 1];
        for (long long j = a.indptr[i]; j < a.indptr[i + 1] && same; j++)
            same = dv[j] == a.data[j] && iv[j] == a.indices[j];
    }
    for (int i = 0; i < N_CELLS - 20 && same; i++) {
        long long off = a.indptr[20];
        same = ip[20 + i + 1] == b.indptr[i + 1] + off;
        for (long long j = b.indptr[i]; j < b.indptr[i + 1] && same; j++)
            same = dv[off + j] == b.data[j] && iv[off + j] == b.indices[j];
    }
    TU_CHECK(same, "X values round trip");
    free(ip);
    free(dv);
    free(iv);
    const char *obs_cols[] = {"batch", "n_counts", "barcode"};
    TU_CHECK(tu_dataframe(f, "obs", N_CELLS, obs_cols, 3), "obs dataframe");
    TU_CHECK(tu_dataframe(f, "var", N_GENES, NULL, 0), "var dataframe, empty column-order");
    TU_CHECK(tu_tracked(f, "obs") && tu_tracked(f, "var"), "creation order tracked");
    TU_CHECK(tu_enc(f, "obs/batch", "categorical", "0.2.0"), "categorical");
    TU_CHECK(tu_ordered_false(f, "obs/batch"), "ordered bool enum");
    TU_CHECK(tu_dset(f, "obs/batch/codes", H5T_INTEGER, 1, 1, N_CELLS, 0), "codes i8");
    TU_CHECK(tu_enc(f, "obs/batch/codes", "array", "0.2.0"), "codes encoding");
    TU_CHECK(tu_dset(f, "obs/batch/categories", H5T_STRING, 0, 1, 3, 0), "categories");
    TU_CHECK(tu_enc(f, "obs/batch/categories", "string-array", "0.2.0"), "categories enc");
    TU_CHECK(tu_dset(f, "obs/n_counts", H5T_FLOAT, 8, 1, N_CELLS, 0), "numeric f64");
    TU_CHECK(tu_enc(f, "obs/n_counts", "array", "0.2.0"), "numeric enc");
    TU_CHECK(tu_dset(f, "obs/barcode", H5T_STRING, 0, 1, N_CELLS, 0), "string column");
    char *s = tu_string_at(f, "obs/_index", 17);
    TU_CHECK(s && !strcmp(s, "c17"), "obs name %s", s ? s : "(null)");
    free(s);
    s = tu_string_at(f, "var/_index", 11);
    TU_CHECK(s && !strcmp(s, "G11"), "var name");
    free(s);
    s = tu_string_at(f, "obs/barcode", 3);
    TU_CHECK(s && !strcmp(s, "BC-3-\xc3\xa9"), "utf-8 string column");
    free(s);
    H5Fclose(f);
    free_columns(cols);
    for (int i = 0; i < N_CELLS; i++) free(obs[i]);
    for (int g = 0; g < N_GENES; g++) free(var[g]);
    av_csr_free(&a);
    av_csr_free(&b);

    /* generated names, uncompressed, no columns; abort leaves nothing */
    const char *p2 = pathf("csr_gen.h5ad");
    w = av_csr_writer_create_opts(p2, 5, NULL, 0, err);
    TU_CHECK(w != NULL, "%s", err);
    make_rows(&a, 0, 9, 5);
    TU_CHECK(av_csr_writer_append(w, &a, err) == 0, "%s", err);
    TU_CHECK(av_csr_writer_finish(w, NULL, NULL, 0, err) == 0, "%s", err);
    f = H5Fopen(p2, H5F_ACC_RDONLY, H5P_DEFAULT);
    TU_CHECK(tu_dataframe(f, "obs", 9, NULL, 0), "obs without columns");
    s = tu_string_at(f, "obs/_index", 8);
    TU_CHECK(s && !strcmp(s, "cell_8"), "generated obs name");
    free(s);
    s = tu_string_at(f, "var/_index", 4);
    TU_CHECK(s && !strcmp(s, "gene_4"), "generated var name");
    free(s);
    H5Fclose(f);
    const char *p3 = pathf("csr_abort.h5ad");
    w = av_csr_writer_create(p3, 5, NULL, err);
    TU_CHECK(av_csr_writer_append(w, &a, err) == 0, "%s", err);
    av_csr_writer_abort(w);
    TU_CHECK(!exists(p3) && count_tmps("csr_abort.h5ad") == 0, "abort removes the temporary");
    av_csr_free(&a);
}

/* 2: AvWriter from a non-h5ad source (names only) and from a modern h5ad (copy). */
/* A 10x source known by its names only (obs and var are rebuilt from them): cells
 * "AAAC-<i>", genes "Gene<g>". */
static AvInput names_input(int n_cells, int n_genes) {
    AvInput in;
    memset(&in, 0, sizeof in);
    in.path = pathf("source_10x.h5"); /* never opened for a non-h5ad source */
    in.format = AV_FMT_10X_H5;
    in.matrix_name = "matrix";
    in.n_obs = n_cells;
    in.n_vars = n_genes;
    in.obs_names = malloc((size_t)n_cells * sizeof(char *));
    in.var_names = malloc((size_t)n_genes * sizeof(char *));
    for (int i = 0; i < n_cells; i++) {
        in.obs_names[i] = malloc(32);
        snprintf(in.obs_names[i], 32, "AAAC-%d", i);
    }
    for (int g = 0; g < n_genes; g++) {
        in.var_names[g] = malloc(32);
        snprintf(in.var_names[g], 32, "Gene%d", g);
    }
    return in;
}

static void test_writer(void) {
    char err[AV_ERRLEN] = "";
    AvInput in = names_input(N_CELLS, N_GENES);
    const char *p = pathf("from_names.h5ad");
    unlink(p);
    AvWriter *w = av_writer_create(p, &in, err);
    TU_CHECK(w != NULL, "%s", err);
    if (!w) return;
    float *z = obsm_matrix(N_CELLS, 10, 1.0f);
    float *l = obsm_matrix(N_CELLS, N_GENES, 0.5f);
    TU_CHECK(av_writer_obsm(w, "X_scVI", z, N_CELLS, 10, err) == 0, "%s", err);
    TU_CHECK(av_writer_obsm(w, "X_scVI", z, N_CELLS - 1, 10, err) != 0, "row mismatch refused");
    TU_CHECK(strstr(err, "rows") != NULL, "message: %s", err);
    TU_CHECK(av_writer_obsm(w, "a/b", z, N_CELLS, 10, err) != 0, "bad key refused");
    TU_CHECK(av_writer_layer(w, "scvi_normalized", l, N_CELLS, N_GENES, err) == 0, "%s", err);
    TU_CHECK(av_writer_layer(w, "x", l, N_CELLS, N_GENES - 1, err) != 0, "layer shape refused");
    TU_CHECK(av_writer_commit(w, err) == 0, "%s", err);
    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    TU_CHECK(f >= 0, "reopen");
    TU_CHECK(tu_enc(f, "/", "anndata", "0.1.0"), "root");
    TU_CHECK(tu_dataframe(f, "obs", N_CELLS, NULL, 0), "obs");
    TU_CHECK(tu_dataframe(f, "var", N_GENES, NULL, 0), "var");
    TU_CHECK(tu_enc(f, "obsm", "dict", "0.1.0") && tu_enc(f, "layers", "dict", "0.1.0"), "dicts");
    TU_CHECK(tu_dset(f, "obsm/X_scVI", H5T_FLOAT, 4, 2, N_CELLS, 10), "obsm shape");
    TU_CHECK(tu_enc(f, "obsm/X_scVI", "array", "0.2.0"), "obsm enc");
    TU_CHECK(tu_dset(f, "layers/scvi_normalized", H5T_FLOAT, 4, 2, N_CELLS, N_GENES), "layer");
    TU_CHECK(H5Lexists(f, "X", H5P_DEFAULT) == 0, "no X");
    char *s = tu_string_at(f, "obs/_index", 5);
    TU_CHECK(s && !strcmp(s, "AAAC-5"), "obs names from the input");
    free(s);
    H5Fclose(f);

    /* abort removes the temporary file */
    const char *pa = pathf("aborted.h5ad");
    w = av_writer_create(pa, &in, err);
    TU_CHECK(w != NULL, "%s", err);
    av_writer_obsm(w, "X_scVI", z, N_CELLS, 10, err);
    av_writer_abort(w);
    TU_CHECK(!exists(pa) && count_tmps("aborted.h5ad") == 0, "abort leaves nothing");

    /* names not read -> one clear line */
    char **keep = in.obs_names;
    in.obs_names = NULL;
    w = av_writer_create(pathf("nonames.h5ad"), &in, err);
    TU_CHECK(w == NULL && strstr(err, "names"), "missing names: %s", err);
    in.obs_names = keep;

    /* modern h5ad source: obs/var copied as they are, plus an added column */
    AvInput h;
    memset(&h, 0, sizeof h);
    h.path = pathf("csr.h5ad");
    h.format = AV_FMT_H5AD;
    h.matrix_name = "X";
    h.n_obs = N_CELLS;
    h.n_vars = N_GENES;
    AvColumn extra;
    memset(&extra, 0, sizeof extra);
    extra.name = "leiden";
    extra.kind = AV_COL_CATEGORICAL;
    extra.n = N_CELLS;
    extra.codes = malloc(N_CELLS * sizeof(int32_t));
    for (int i = 0; i < N_CELLS; i++) extra.codes[i] = i % 2 ? 1 : -1;
    static char *lc[] = {"0", "1"};
    extra.n_categories = 2;
    extra.categories = lc;
    const char *pc = pathf("copied.h5ad");
    w = av_writer_create_cols(pc, &h, &extra, 1, err);
    TU_CHECK(w != NULL, "%s", err);
    if (w) {
        TU_CHECK(av_writer_obsm(w, "X_scVI", z, N_CELLS, 10, err) == 0, "%s", err);
        TU_CHECK(av_writer_commit(w, err) == 0, "%s", err);
    }
    f = H5Fopen(pc, H5F_ACC_RDONLY, H5P_DEFAULT);
    const char *cc[] = {"batch", "n_counts", "barcode", "leiden"};
    TU_CHECK(tu_dataframe(f, "obs", N_CELLS, cc, 4), "copied obs + leiden");
    TU_CHECK(tu_ordered_false(f, "obs/batch") && tu_ordered_false(f, "obs/leiden"), "cats");
    s = tu_string_at(f, "var/_index", 2);
    TU_CHECK(s && !strcmp(s, "G2"), "copied var");
    free(s);
    H5Fclose(f);
    free(extra.codes);

    /* the writer refuses to replace its own source */
    w = av_writer_create(h.path, &h, err);
    TU_CHECK(w == NULL && strstr(err, "input"), "output == input refused: %s", err);

    av_free_strings(in.obs_names, N_CELLS);
    av_free_strings(in.var_names, N_GENES);
    free(z);
    free(l);
}

static long long file_size(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 ? (long long)st.st_size : -1;
}

/* 3: in-place obsm: replaces the key atomically, leaves everything else alone. */
static void test_inplace(void) {
    char err[AV_ERRLEN] = "";
    const char *src = pathf("csr.h5ad"), *p = pathf("inplace.h5ad");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", src, p);
    TU_CHECK(system(cmd) == 0, "copy");
    float *z8 = obsm_matrix(N_CELLS, 8, 2.0f), *z10 = obsm_matrix(N_CELLS, 10, 1.0f);
    TU_CHECK(av_write_obsm_inplace(p, "X_old", z8, N_CELLS, 8, err) == 0, "%s", err);
    TU_CHECK(av_write_obsm_inplace(p, "X_scVI", z8, N_CELLS, 8, err) == 0, "%s", err);
    TU_CHECK(av_write_obsm_inplace(p, "X_scVI", z10, N_CELLS, 10, err) == 0, "%s", err);
    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    TU_CHECK(tu_enc(f, "obsm", "dict", "0.1.0"), "obsm dict created");
    TU_CHECK(tu_dset(f, "obsm/X_scVI", H5T_FLOAT, 4, 2, N_CELLS, 10), "replaced with k = 10");
    TU_CHECK(tu_dset(f, "obsm/X_old", H5T_FLOAT, 4, 2, N_CELLS, 8), "other key untouched");
    hid_t g = H5Gopen2(f, "obsm", H5P_DEFAULT);
    H5G_info_t gi;
    H5Gget_info(g, &gi);
    TU_CHECK(gi.nlinks == 2, "no temporary links left (%llu links)", (unsigned long long)gi.nlinks);
    H5Gclose(g);
    TU_CHECK(tu_shape(f, "X", N_CELLS, N_GENES), "X untouched");
    const char *cols[] = {"batch", "n_counts", "barcode"};
    TU_CHECK(tu_dataframe(f, "obs", N_CELLS, cols, 3), "obs untouched");
    H5Fclose(f);

    /* errors: wrong row count (file unchanged), not HDF5, missing, read-only */
    long long before = file_size(p);
    TU_CHECK(av_write_obsm_inplace(p, "X_scVI", z10, N_CELLS + 1, 10, err) != 0, "rows");
    TU_CHECK(strstr(err, "cells") != NULL, "message: %s", err);
    TU_CHECK(file_size(p) == before, "unchanged on refusal");
    f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    TU_CHECK(tu_dset(f, "obsm/X_scVI", H5T_FLOAT, 4, 2, N_CELLS, 10), "still k = 10");
    H5Fclose(f);
    const char *txt = pathf("not_hdf5.h5ad");
    FILE *t = fopen(txt, "w");
    fputs("hello, not an HDF5 file\n", t);
    fclose(t);
    TU_CHECK(av_write_obsm_inplace(txt, "X_scVI", z10, N_CELLS, 10, err) != 0, "not hdf5");
    TU_CHECK(strstr(err, "not an HDF5") != NULL, "message: %s", err);
    TU_CHECK(av_write_obsm_inplace(pathf("missing.h5ad"), "X", z10, N_CELLS, 10, err) != 0,
             "missing");
    TU_CHECK(strstr(err, "no such file") != NULL, "message: %s", err);
    TU_CHECK(strchr(err, '\n') == NULL, "one line");
    if (geteuid() != 0) {
        chmod(p, 0444);
        TU_CHECK(av_write_obsm_inplace(p, "X_scVI", z10, N_CELLS, 10, err) != 0, "read-only");
        TU_CHECK(strstr(err, "cannot open for writing") != NULL, "message: %s", err);
        chmod(p, 0644);
    }
    free(z8);
    free(z10);
}

/* 4: real files from $AV_DATA (skipped when absent): copy obs/var of a CELLxGENE file
 * (raw/var when the matrix is raw/X), in-place obsm into a copy of a scanpy file. */
static void test_real(void) {
    const char *data = getenv("AV_DATA");
    char src[2048], src2[2048], cmd[4096], err[AV_ERRLEN] = "";
    if (!data) return;
    snprintf(src, sizeof src, "%s/heart_hca_fibro_endo_320x136.h5ad", data);
    snprintf(src2, sizeof src2, "%s/real_pbmc_kang18_ctrlstim_1556x1267.h5ad", data);
    if (access(src, R_OK) == 0) {
        AvInput h;
        memset(&h, 0, sizeof h);
        h.path = src;
        h.format = AV_FMT_H5AD;
        h.matrix_name = "raw/X";
        h.n_obs = 320;
        h.n_vars = 136;
        AvWriter *w = av_writer_create(pathf("real_heart.h5ad"), &h, err);
        TU_CHECK(w != NULL, "%s", err);
        float *z = obsm_matrix(320, 10, 1.0f);
        if (w) {
            TU_CHECK(av_writer_obsm(w, "X_scVI", z, 320, 10, err) == 0, "%s", err);
            TU_CHECK(av_writer_commit(w, err) == 0, "%s", err);
        }
        free(z);
    } else {
        printf("test_output: %s absent, real-file copy not tested\n", src);
    }
    if (access(src2, R_OK) == 0) {
        const char *p = pathf("real_kang_inplace.h5ad");
        snprintf(cmd, sizeof cmd, "cp '%s' '%s' && chmod u+w '%s'", src2, p, p);
        TU_CHECK(system(cmd) == 0, "copy");
        float *z = obsm_matrix(1556, 10, 1.0f);
        TU_CHECK(av_write_obsm_inplace(p, "X_scVI", z, 1556, 10, err) == 0, "%s", err);
        free(z);
    } else {
        printf("test_output: %s absent, real in-place write not tested\n", src2);
    }
}

/* 5: two writers of one output at once get temporaries of their own: both commit, the
 * file is the last one's, whole; a temporary of the old fixed name is left alone. */
static void test_concurrent_writers(void) {
    char err[AV_ERRLEN] = "", old_tmp[1300], seen[64] = "";
    AvInput in = names_input(N_CELLS, N_GENES);
    const char *p = pathf("shared.h5ad");
    unlink(p);
    snprintf(old_tmp, sizeof old_tmp, "%s.tmp", p);
    FILE *o = fopen(old_tmp, "w");
    fputs("another run's temporary", o);
    fclose(o);
    AvWriter *a = av_writer_create(p, &in, err), *b = av_writer_create(p, &in, err);
    TU_CHECK(a && b && count_tmps("shared.h5ad") == 3, "two more temporaries: %s", err);
    float *za = obsm_matrix(N_CELLS, 4, 1.0f), *zb = obsm_matrix(N_CELLS, 4, 2.0f);
    TU_CHECK(a && av_writer_obsm(a, "X_scVI", za, N_CELLS, 4, err) == 0, "%s", err);
    TU_CHECK(b && av_writer_obsm(b, "X_scVI", zb, N_CELLS, 4, err) == 0, "%s", err);
    TU_CHECK(a && av_writer_commit(a, err) == 0, "first commit: %s", err);
    TU_CHECK(b && av_writer_commit(b, err) == 0, "second commit: %s", err);
    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    long long n = 0;
    float *z = f >= 0 ? tu_read_all(f, "obsm/X_scVI", H5T_NATIVE_FLOAT, sizeof(float), &n) : NULL;
    TU_CHECK(z && n == N_CELLS * 4 && z[3 * 4 + 1] == obsm_value(3, 1, 2.0f), "last commit wins");
    if (f >= 0) H5Fclose(f);
    TU_CHECK(count_tmps("shared.h5ad") == 1, "no temporary of ours left");
    o = fopen(old_tmp, "r");
    TU_CHECK(o && fgets(seen, sizeof seen, o) && !strcmp(seen, "another run's temporary"),
             "the other temporary is untouched");
    if (o) fclose(o);
    unlink(old_tmp);
    free(z);
    free(za);
    free(zb);
    av_free_strings(in.obs_names, N_CELLS);
    av_free_strings(in.var_names, N_GENES);
}

/* One attempt of each writer under a file size limit of `limit` bytes; returns how many
 * succeeded. A failure must be an error naming the file, with nothing left behind. */
static int write_all_under_limit(rlim_t limit, const AvInput *in, const float *z,
                                 const float *layer, const AvBlob *blob, const AvCsr *rows) {
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = limit;
    const char *ph = pathf("limited.h5ad"), *pm = pathf("limited_model.h5"),
               *pc = pathf("limited_csr.h5ad");
    unlink(ph), unlink(pm), unlink(pc);
    char err[3][AV_ERRLEN] = {"", "", ""};
    int rc[3];
    setrlimit(RLIMIT_FSIZE, &lim);
    AvWriter *w = av_writer_create(ph, in, err[0]);
    rc[0] = !w || av_writer_obsm(w, "X_scVI", z, in->n_obs, 10, err[0]) ||
            av_writer_layer(w, "norm", layer, in->n_obs, in->n_vars, err[0]);
    if (w && rc[0]) av_writer_abort(w);
    if (w && !rc[0]) rc[0] = av_writer_commit(w, err[0]);
    rc[1] = av_blob_save(pm, blob, err[1]);
    AvCsrWriter *c = av_csr_writer_create(pc, rows->n_cols, NULL, err[2]);
    rc[2] = !c || av_csr_writer_append(c, rows, err[2]);
    if (c && rc[2]) av_csr_writer_abort(c);
    if (c && !rc[2]) rc[2] = av_csr_writer_finish(c, NULL, NULL, 0, err[2]);
    setrlimit(RLIMIT_FSIZE, &old);
    const char *paths[3] = {ph, pm, pc},
               *names[3] = {"limited.h5ad", "limited_model.h5", "limited_csr.h5ad"};
    int ok = 0;
    for (int k = 0; k < 3; k++) {
        TU_CHECK(count_tmps(names[k]) == 0, "limit %lld: a temporary of %s is left (%s)",
                 (long long)limit, names[k], rc[k] ? err[k] : "written");
        if (!rc[k]) {
            hid_t f = H5Fopen(paths[k], H5F_ACC_RDONLY, H5P_DEFAULT);
            TU_CHECK(f >= 0, "limit %lld: %s was reported written but does not open",
                     (long long)limit, paths[k]);
            if (f >= 0) H5Fclose(f);
            ok++;
        } else {
            TU_CHECK(!exists(paths[k]) && strstr(err[k], paths[k]) && !strchr(err[k], '\n'),
                     "limit %lld: failure of %s: '%s'", (long long)limit, paths[k], err[k]);
        }
    }
    return ok;
}

/* 6: a full disk, as a file size limit (RLIMIT_FSIZE with SIGXFSZ ignored, so writes fail
 * with EFBIG): at every size each writer either succeeds or fails with one message, leaves
 * no temporary, and HDF5 does not crash at exit (HDF5 1.10 does after a failed flush). */
static void test_size_limit(void) {
    signal(SIGXFSZ, SIG_IGN);
    AvInput in = names_input(2000, 300);
    float *z = obsm_matrix(2000, 10, 1.0f), *layer = obsm_matrix(2000, 300, 0.5f);
    AvBlob blob;
    memset(&blob, 0, sizeof blob);
    av_blob_add_array(&blob, "params/w", 300, 300, layer);
    av_blob_set_attr(&blob, "model", "test");
    AvCsr rows;
    make_rows(&rows, 0, 20000, 300);
    int attempts = 0, ok = 0;
    for (rlim_t limit = 1024; limit < (8u << 20); limit = limit * 5 / 4, attempts += 3)
        ok += write_all_under_limit(limit, &in, z, layer, &blob, &rows);
    TU_CHECK(ok > 0 && ok < attempts, "%d of %d writes succeeded: both cases must be seen", ok,
             attempts);
    av_csr_free(&rows);
    av_blob_free(&blob);
    free(z);
    free(layer);
    av_free_strings(in.obs_names, 2000);
    av_free_strings(in.var_names, 300);
}

int main(int argc, char **argv) {
    snprintf(dir, sizeof dir, "%s", argc > 1 ? argv[1] : "output_files");
    mkdir(dir, 0755);
    test_csr_writer();
    test_writer();
    test_inplace();
    test_real();
    test_concurrent_writers();
    test_size_limit();
    if (tu_fails) {
        fprintf(stderr, "test_output: %d failure(s)\n", tu_fails);
        return 1;
    }
    printf("test_output: all checks passed (files in %s)\n", dir);
    return 0;
}
