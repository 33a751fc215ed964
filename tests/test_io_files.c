/* Reads files with io/input.h and compares against values established with h5py/scipy
 * (tests/make_io_expected.py). Two modes:
 *   test_io_files EXPECTED.txt              shared data files under $AV_DATA
 *   test_io_files --fixtures OUTDIR         generates synthetic fixtures with
 *                                           /usr/bin/python3 + h5py into OUTDIR, then
 *                                           compares against OUTDIR/expected.txt
 * Also: reading [lo, hi) in 1, 2 and 3 pieces gives the same rows as one read, and the
 * 10x HDF5 and Matrix Market copies of tenx_v3_chr21 hold the same matrix. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/input.h"
#include "src/util.h"

static int failures = 0;
static const char *cur = "";

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, "FAIL [%s] ", cur);                                                        \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        failures++;                                                                                \
    } while (0)

static int close_to(double a, double b) {
    return fabs(a - b) <= 1e-6 * (1.0 + fabs(b));
}

/* Splits a line on tabs in place. */
static int split(char *line, char **f, int max) {
    int n = 0;
    line[strcspn(line, "\r\n")] = '\0';
    f[n++] = line;
    for (char *p = line; *p && n < max; p++)
        if (*p == '\t') {
            *p = '\0';
            f[n++] = p + 1;
        }
    return n;
}

static double csr_get(const AvCsr *m, int64_t r, int32_t c) {
    int64_t a = m->indptr[r], b = m->indptr[r + 1];
    while (a < b) {
        int64_t mid = (a + b) / 2;
        if (m->indices[mid] == c) return m->data[mid];
        if (m->indices[mid] < c)
            a = mid + 1;
        else
            b = mid;
    }
    return 0.0;
}

static int csr_equal(const AvCsr *a, const AvCsr *b, int64_t b_row0) {
    for (int64_t r = 0; r < a->n_rows; r++) {
        int64_t la = a->indptr[r + 1] - a->indptr[r];
        int64_t lb = b->indptr[b_row0 + r + 1] - b->indptr[b_row0 + r];
        if (la != lb) return 0;
        if (la && (memcmp(a->indices + a->indptr[r], b->indices + b->indptr[b_row0 + r],
                          (size_t)la * sizeof(int32_t)) ||
                   memcmp(a->data + a->indptr[r], b->data + b->indptr[b_row0 + r],
                          (size_t)la * sizeof(float))))
            return 0;
    }
    return 1;
}

static void check_structure(const AvCsr *m) {
    if (m->indptr[0] != 0) FAIL("indptr[0] = %lld", (long long)m->indptr[0]);
    for (int64_t r = 0; r < m->n_rows; r++) {
        for (int64_t k = m->indptr[r]; k < m->indptr[r + 1]; k++) {
            if (m->indices[k] < 0 || m->indices[k] >= m->n_cols) {
                FAIL("row %lld: column %d out of range", (long long)r, m->indices[k]);
                return;
            }
            if (k > m->indptr[r] && m->indices[k] <= m->indices[k - 1]) {
                FAIL("row %lld: columns not strictly increasing", (long long)r);
                return;
            }
            if (m->data[k] == 0.0f) {
                FAIL("row %lld: explicit zero kept", (long long)r);
                return;
            }
        }
    }
}

/* [lo, hi) read in 1, 2 and 3 pieces equals the rows of the full matrix. */
static void check_pieces(AvInput *in, const AvCsr *full) {
    int64_t n = in->n_obs;
    int64_t spans[2][2] = {{0, n}, {n / 3, n - n / 5}};
    for (int s = 0; s < 2; s++) {
        int64_t lo = spans[s][0], hi = spans[s][1];
        for (int parts = 1; parts <= 3; parts++) {
            for (int p = 0; p < parts; p++) {
                int64_t a = lo + (hi - lo) * p / parts, b = lo + (hi - lo) * (p + 1) / parts;
                AvCsr piece;
                char err[AV_ERRLEN];
                if (av_input_read_rows(in, a, b, &piece, err)) {
                    FAIL("read_rows(%lld, %lld): %s", (long long)a, (long long)b, err);
                    continue;
                }
                if (piece.n_rows != b - a || !csr_equal(&piece, full, a))
                    FAIL("rows [%lld, %lld) read in %d pieces differ from the full read",
                         (long long)a, (long long)b, parts);
                av_csr_free(&piece);
            }
        }
    }
    /* read_indptr: per-row stored counts bound the rows' non-zeros. */
    int64_t *ip = av_malloc((size_t)(n + 1) * sizeof *ip);
    char err[AV_ERRLEN];
    if (av_input_read_indptr(in, ip, err))
        FAIL("read_indptr: %s", err);
    else
        for (int64_t r = 0; r < n; r++)
            if (ip[r + 1] - ip[r] < full->indptr[r + 1] - full->indptr[r] || ip[0] != 0) {
                FAIL("read_indptr row %lld: %lld stored < %lld read", (long long)r,
                     (long long)(ip[r + 1] - ip[r]),
                     (long long)(full->indptr[r + 1] - full->indptr[r]));
                break;
            }
    free(ip);
}

typedef struct {
    AvInput in;
    AvCsr m;
    int open;
    AvColumn col;
    int have_col, next_cat;
    int64_t *cat_counts;
} State;

static void state_end(State *st) {
    if (st->have_col) av_column_free(&st->col);
    free(st->cat_counts);
    st->cat_counts = NULL;
    st->have_col = 0;
    if (st->open) {
        av_csr_free(&st->m);
        av_input_close(&st->in);
    }
    st->open = 0;
}

static void start_column(State *st, const char *key, int64_t ncat, int strcat) {
    if (st->have_col) av_column_free(&st->col);
    free(st->cat_counts);
    st->cat_counts = NULL;
    st->have_col = 0;
    char err[AV_ERRLEN];
    if (av_input_read_obs_column(&st->in, key, &st->col, err)) {
        FAIL("obs column %s: %s", key, err);
        return;
    }
    st->have_col = 1;
    if (strcat) {
        if (st->col.kind != AV_COL_STRING) FAIL("%s: expected a string column", key);
        av_column_to_categorical(&st->col);
    } else if (st->col.kind != AV_COL_CATEGORICAL) {
        FAIL("%s: expected categorical, kind %d", key, (int)st->col.kind);
        av_column_free(&st->col);
        st->have_col = 0;
        return;
    }
    if (st->col.n_categories != ncat)
        FAIL("%s: %d categories, expected %lld", key, st->col.n_categories, (long long)ncat);
    st->cat_counts = av_calloc((size_t)st->col.n_categories + 1, sizeof(int64_t));
    for (int64_t i = 0; i < st->col.n; i++)
        if (st->col.codes[i] >= 0) st->cat_counts[st->col.codes[i]]++;
    st->next_cat = 0;
}

static int run_expected(const char *expected, const char *root) {
    FILE *fp = fopen(expected, "r");
    if (!fp) {
        fprintf(stderr, "cannot open %s\n", expected);
        return 1;
    }
    char line[4096], path[2048], layer[256], curbuf[2400];
    char *f[8];
    State st = {0};
    int files = 0;
    while (fgets(line, sizeof line, fp)) {
        int nf = split(line, f, 8);
        const char *k = f[0];
        if (!strcmp(k, "file")) {
            snprintf(path, sizeof path, "%s/%s", root, f[1]);
            layer[0] = '\0';
        } else if (!strcmp(k, "layer")) {
            snprintf(layer, sizeof layer, "%s", strcmp(f[1], "-") ? f[1] : "");
            snprintf(curbuf, sizeof curbuf, "%s%s%s", path + strlen(root) + 1,
                     layer[0] ? " --layer " : "", layer);
            cur = curbuf;
            char err[AV_ERRLEN];
            if (av_input_open(&st.in, path, layer[0] ? layer : NULL, err)) {
                FAIL("open: %s", err);
                continue;
            }
            st.open = 1;
            files++;
            if (av_input_read_rows(&st.in, 0, st.in.n_obs, &st.m, err)) {
                FAIL("read_rows: %s", err);
                av_input_close(&st.in);
                st.open = 0;
                continue;
            }
            if (av_input_read_names(&st.in, err)) FAIL("read_names: %s", err);
            check_structure(&st.m);
            check_pieces(&st.in, &st.m);
        } else if (!st.open) {
            continue;
        } else if (!strcmp(k, "format")) {
            if (strcmp(av_format_name(st.in.format), f[1]))
                FAIL("format %s, expected %s", av_format_name(st.in.format), f[1]);
        } else if (!strcmp(k, "shape") && nf >= 3) {
            if (st.in.n_obs != atoll(f[1]) || st.in.n_vars != atoll(f[2]))
                FAIL("shape %lld x %lld, expected %s x %s", (long long)st.in.n_obs,
                     (long long)st.in.n_vars, f[1], f[2]);
        } else if (!strcmp(k, "nnz")) {
            if (av_csr_nnz(&st.m) != atoll(f[1]))
                FAIL("nnz %lld, expected %s", (long long)av_csr_nnz(&st.m), f[1]);
        } else if (!strcmp(k, "sum")) {
            double s = 0;
            for (int64_t i = 0; i < av_csr_nnz(&st.m); i++) s += st.m.data[i];
            if (!close_to(s, atof(f[1]))) FAIL("sum %.17g, expected %s", s, f[1]);
        } else if (!strcmp(k, "rowsum") && nf >= 3) {
            int64_t r = atoll(f[1]);
            double s = 0;
            for (int64_t i = st.m.indptr[r]; i < st.m.indptr[r + 1]; i++) s += st.m.data[i];
            if (!close_to(s, atof(f[2])))
                FAIL("row %lld sum %.17g, expected %s", (long long)r, s, f[2]);
        } else if (!strcmp(k, "probe") && nf >= 4) {
            double v = csr_get(&st.m, atoll(f[1]), atoi(f[2]));
            if (!close_to(v, atof(f[3]))) FAIL("X[%s, %s] = %g, expected %s", f[1], f[2], v, f[3]);
        } else if ((!strcmp(k, "obsname") || !strcmp(k, "varname")) && nf >= 3) {
            char **names = k[0] == 'o' ? st.in.obs_names : st.in.var_names;
            int64_t i = atoll(f[1]);
            if (!names || strcmp(names[i], f[2]))
                FAIL("%s %lld = '%s', expected '%s'", k, (long long)i, names ? names[i] : "(null)",
                     f[2]);
        } else if ((!strcmp(k, "cat") || !strcmp(k, "strcat")) && nf >= 3) {
            start_column(&st, f[1], atoll(f[2]), k[0] == 's');
        } else if (!strcmp(k, "catv") && nf >= 3) {
            if (!st.have_col) continue;
            int c = st.next_cat++;
            if (c >= st.col.n_categories) {
                FAIL("%s: too few categories", st.col.name);
            } else {
                if (strcmp(st.col.categories[c], f[1]))
                    FAIL("%s: category %d = '%s', expected '%s'", st.col.name, c,
                         st.col.categories[c], f[1]);
                if (st.cat_counts[c] != atoll(f[2]))
                    FAIL("%s: '%s' count %lld, expected %s", st.col.name, f[1],
                         (long long)st.cat_counts[c], f[2]);
            }
        } else if (!strcmp(k, "num") && nf >= 4) {
            AvColumn c;
            char err[AV_ERRLEN];
            if (av_input_read_obs_column(&st.in, f[1], &c, err)) {
                FAIL("obs column %s: %s", f[1], err);
                continue;
            }
            if (c.kind != AV_COL_NUMERIC) {
                FAIL("%s: expected numeric", f[1]);
            } else {
                double s = 0;
                int64_t nan = 0;
                for (int64_t i = 0; i < c.n; i++) {
                    if (isnan(c.values[i]))
                        nan++;
                    else
                        s += c.values[i];
                }
                if (!close_to(s, atof(f[2])) || nan != atoll(f[3]))
                    FAIL("%s: sum %.17g with %lld missing, expected %s with %s", f[1], s,
                         (long long)nan, f[2], f[3]);
            }
            av_column_free(&c);
        } else if (!strcmp(k, "end")) {
            state_end(&st);
        }
    }
    state_end(&st);
    fclose(fp);
    cur = "";
    printf("%d matrices checked against %s\n", files, expected);
    return 0;
}

/* The 10x HDF5 and Matrix Market copies of tenx_v3_chr21 are the same matrix. */
static void check_h5_vs_mtx(const char *root) {
    char p1[2048], p2[2048], err[AV_ERRLEN];
    snprintf(p1, sizeof p1, "%s/tenx_v3_chr21/filtered_feature_bc_matrix.h5", root);
    snprintf(p2, sizeof p2, "%s/tenx_v3_chr21/filtered_feature_bc_matrix", root);
    cur = "tenx_v3_chr21 h5 vs mtx";
    AvInput a, b;
    AvCsr ma, mb;
    if (av_input_open(&a, p1, NULL, err) || av_input_read_rows(&a, 0, a.n_obs, &ma, err) ||
        av_input_read_names(&a, err)) {
        FAIL("%s", err);
        return;
    }
    if (av_input_open(&b, p2, NULL, err) || av_input_read_rows(&b, 0, b.n_obs, &mb, err) ||
        av_input_read_names(&b, err)) {
        FAIL("%s", err);
        return;
    }
    if (a.n_obs != b.n_obs || a.n_vars != b.n_vars || av_csr_nnz(&ma) != av_csr_nnz(&mb) ||
        !csr_equal(&ma, &mb, 0))
        FAIL("matrices differ");
    for (int64_t i = 0; i < a.n_obs && i < b.n_obs; i++)
        if (strcmp(a.obs_names[i], b.obs_names[i])) {
            FAIL("barcode %lld differs", (long long)i);
            break;
        }
    for (int64_t i = 0; i < a.n_vars && i < b.n_vars; i++)
        if (strcmp(a.var_names[i], b.var_names[i])) {
            FAIL("feature %lld differs", (long long)i);
            break;
        }
    AvColumn ca, cb;
    if (av_input_read_var_column(&a, "gene_ids", &ca, err) ||
        av_input_read_var_column(&b, "gene_ids", &cb, err))
        FAIL("gene_ids: %s", err);
    else {
        for (int64_t i = 0; i < ca.n; i++)
            if (strcmp(ca.strings[i], cb.strings[i])) {
                FAIL("gene_ids %lld differ", (long long)i);
                break;
            }
        av_column_free(&ca);
        av_column_free(&cb);
    }
    av_csr_free(&ma);
    av_csr_free(&mb);
    av_input_close(&a);
    av_input_close(&b);
    cur = "";
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "--fixtures")) {
        const char *src = getenv("AV_SRC");
        struct stat sb;
        if (stat("/usr/bin/python3", &sb) != 0) {
            printf(
                "SKIP: /usr/bin/python3 not found; synthetic fixtures (LZF, CSC, legacy, 10x v2, "
                "mtx) need python3 with h5py, numpy and scipy\n");
            return 77;
        }
        char cmd[4096];
        snprintf(cmd, sizeof cmd,
                 "/usr/bin/python3 -c 'import h5py, numpy, scipy' 2>/dev/null && rm -rf '%s' && "
                 "/usr/bin/python3 '%s/tests/make_io_expected.py' --fixtures '%s'",
                 argv[2], src ? src : ".", argv[2]);
        if (system(cmd) != 0) {
            printf("SKIP: could not generate fixtures with /usr/bin/python3 (h5py, numpy and scipy "
                   "needed)\n");
            return 77;
        }
        char exp[2048];
        snprintf(exp, sizeof exp, "%s/expected.txt", argv[2]);
        run_expected(exp, argv[2]);
    } else {
        const char *root = getenv("AV_DATA");
        char probe[2048];
        struct stat sb;
        snprintf(probe, sizeof probe, "%s/heart_hca_fibro_endo_320x136.h5ad", root ? root : "");
        if (!root || stat(probe, &sb) != 0) {
            printf("SKIP: shared data not found (AV_DATA=%s)\n", root ? root : "unset");
            return 77;
        }
        if (argc < 2) {
            fprintf(stderr, "usage: test_io_files EXPECTED.txt | --fixtures DIR\n");
            return 2;
        }
        run_expected(argv[1], root);
        check_h5_vs_mtx(root);
    }
    if (failures) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    printf("all passed\n");
    return 0;
}
