/* Structural check of an .h5ad written by atlasvi, with HDF5 only (where Python's anndata
 * is missing this is what stands for anndata.read_h5ad in tests/cli_e2e.sh).
 *
 *   check_h5ad_structure FILE [--cells N] [--genes G] [--obsm KEY K] [--layer NAME]
 *                        [--row-sum S] [--like INPUT]
 *     root encoding-type "anndata"; obs and var are dataframes whose index holds N and G
 *     strings; obsm/KEY is float32 N x K and finite; layers/NAME is float32 N x G, finite
 *     and >= 0 (each row summing to S with --row-sum); with --like, obs and var names equal
 * INPUT's. check_h5ad_structure --same A B [--except PATH ...] every dataset of A (outside the PATH
 * prefixes) is in B with the same shape, type class and values (floats within --tol T, relative and
 * absolute, when given), and B has no dataset that A lacks (outside PATH). check_h5ad_structure
 * --dims FILE DATASET prints the dataset's dimensions, e.g. "1 5". Prints one line per failure, "ok
 * ..." otherwise; exit 0 when all checks pass. */
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
static double g_row_sum = 0; /* layers: every row sums to this (relative 1e-3) when > 0 */
static double g_tol = 0;     /* --same: absolute + relative tolerance for float datasets */

static void fail(const char *fmt, const char *a, const char *b) {
    printf("FAIL: ");
    printf(fmt, a, b);
    printf("\n");
    failures++;
}

static char *attr_string(hid_t obj, const char *name) {
    if (H5Aexists(obj, name) <= 0) return NULL;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t t = H5Aget_type(a);
    char *out = NULL;
    if (H5Tget_class(t) == H5T_STRING) {
        if (H5Tis_variable_str(t) > 0) {
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, H5T_VARIABLE);
            H5Tset_cset(mt, H5Tget_cset(t));
            char *s = NULL;
            if (H5Aread(a, mt, &s) >= 0 && s) {
                out = strdup(s);
                H5free_memory(s);
            }
            H5Tclose(mt);
        } else {
            size_t n = H5Tget_size(t);
            out = calloc(n + 1, 1);
            hid_t mt = H5Tcopy(t);
            if (H5Aread(a, mt, out) < 0) {
                free(out);
                out = NULL;
            }
            H5Tclose(mt);
        }
    }
    H5Tclose(t);
    H5Aclose(a);
    return out;
}

/* Reads a 1-D string dataset (variable or fixed length); returns the count or -1. */
static int64_t read_strings(hid_t f, const char *path, char ***out) {
    *out = NULL;
    if (H5Lexists(f, path, H5P_DEFAULT) <= 0) return -1;
    hid_t d = H5Dopen2(f, path, H5P_DEFAULT);
    if (d < 0) return -1;
    hid_t t = H5Dget_type(d), sp = H5Dget_space(d);
    int64_t n = -1;
    hsize_t dims[1] = {0};
    if (H5Tget_class(t) == H5T_STRING && H5Sget_simple_extent_ndims(sp) == 1) {
        H5Sget_simple_extent_dims(sp, dims, NULL);
        char **s = calloc(dims[0] + 1, sizeof *s);
        if (H5Tis_variable_str(t) > 0) {
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, H5T_VARIABLE);
            H5Tset_cset(mt, H5Tget_cset(t));
            if (H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, s) >= 0) {
                for (hsize_t i = 0; i < dims[0]; i++) {
                    char *c = strdup(s[i] ? s[i] : "");
                    H5free_memory(s[i]);
                    s[i] = c;
                }
                n = (int64_t)dims[0];
            }
            H5Tclose(mt);
        } else {
            size_t w = H5Tget_size(t);
            char *buf = calloc(dims[0] * w + 1, 1);
            hid_t mt = H5Tcopy(t);
            if (H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0) {
                for (hsize_t i = 0; i < dims[0]; i++) s[i] = strndup(buf + i * w, w);
                n = (int64_t)dims[0];
            }
            H5Tclose(mt);
            free(buf);
        }
        if (n < 0)
            free(s);
        else
            *out = s;
    }
    H5Tclose(t);
    H5Sclose(sp);
    H5Dclose(d);
    return n;
}

static void free_strings(char **s, int64_t n) {
    for (int64_t i = 0; i < n; i++) free(s[i]);
    free(s);
}

/* The index of a dataframe group: its _index attribute names the dataset. */
static int64_t dataframe_index(hid_t f, const char *group, char ***names) {
    *names = NULL;
    if (H5Lexists(f, group, H5P_DEFAULT) <= 0) {
        fail("no %s group%s", group, "");
        return -1;
    }
    hid_t g = H5Gopen2(f, group, H5P_DEFAULT);
    char *enc = attr_string(g, "encoding-type"), *idx = attr_string(g, "_index");
    int64_t n = -1;
    if (!enc || strcmp(enc, "dataframe"))
        fail("%s: encoding-type is '%s', not 'dataframe'", group, enc ? enc : "(none)");
    if (!idx) {
        fail("%s: no _index attribute%s", group, "");
    } else {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", group, idx);
        n = read_strings(f, path, names);
        if (n < 0) fail("%s: the index dataset '%s' is not a 1-D string array", group, idx);
    }
    free(enc);
    free(idx);
    H5Gclose(g);
    return n;
}

/* A float32 n x k dataset: shape, type and values (finite; >= 0 when nonneg). */
static void check_matrix(hid_t f, const char *path, int64_t n, int64_t k, int nonneg) {
    char want[64];
    snprintf(want, sizeof want, "%lld x %lld", (long long)n, (long long)k);
    if (H5Lexists(f, path, H5P_DEFAULT) <= 0 || H5Oexists_by_name(f, path, H5P_DEFAULT) <= 0) {
        fail("no dataset %s%s", path, "");
        return;
    }
    hid_t d = H5Dopen2(f, path, H5P_DEFAULT);
    hid_t t = H5Dget_type(d), sp = H5Dget_space(d);
    hsize_t dims[2] = {0, 0};
    int nd = H5Sget_simple_extent_ndims(sp);
    if (nd == 2) H5Sget_simple_extent_dims(sp, dims, NULL);
    if (H5Tget_class(t) != H5T_FLOAT || H5Tget_size(t) != 4) fail("%s is not float32%s", path, "");
    if (nd != 2 || (int64_t)dims[0] != n || (int64_t)dims[1] != k) {
        fail("%s does not have shape %s", path, want);
    } else {
        float *v = malloc(sizeof(float) * (size_t)(n * k + 1));
        if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0) {
            fail("cannot read %s%s", path, "");
        } else {
            int64_t bad = 0, neg = 0, nonzero = 0;
            for (int64_t i = 0; i < n * k; i++) {
                bad += !isfinite(v[i]);
                neg += v[i] < 0;
                nonzero += v[i] != 0;
            }
            if (bad) fail("%s holds non-finite values%s", path, "");
            if (nonneg && neg) fail("%s holds negative values%s", path, "");
            if (!nonzero) fail("%s is all zeros%s", path, "");
            for (int64_t i = 0; nonneg && g_row_sum > 0 && i < n; i++) {
                double t = 0;
                for (int64_t j = 0; j < k; j++) t += v[i * k + j];
                if (fabs(t - g_row_sum) > 1e-3 * g_row_sum) {
                    char got[64];
                    snprintf(got, sizeof got, "%g (cell %lld)", t, (long long)i);
                    fail("%s: a row sums to %s", path, got);
                    break;
                }
            }
        }
        free(v);
    }
    H5Tclose(t);
    H5Sclose(sp);
    H5Dclose(d);
}

static void same_names(const char *what, char **a, int64_t na, char **b, int64_t nb) {
    if (na != nb) {
        fail("%s: the output and the input hold different numbers of names%s", what, "");
        return;
    }
    for (int64_t i = 0; i < na; i++)
        if (strcmp(a[i], b[i])) {
            fail("%s: name '%s' differs from the input's", what, a[i]);
            return;
        }
}

static int structure(int argc, char **argv) {
    const char *path = argv[1], *obsm = NULL, *layer = NULL, *like = NULL;
    int64_t n = -1, g = -1, k = -1;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--cells") && i + 1 < argc) {
            n = atoll(argv[++i]);
        } else if (!strcmp(argv[i], "--genes") && i + 1 < argc) {
            g = atoll(argv[++i]);
        } else if (!strcmp(argv[i], "--obsm") && i + 2 < argc) {
            obsm = argv[++i];
            k = atoll(argv[++i]);
        } else if (!strcmp(argv[i], "--layer") && i + 1 < argc) {
            layer = argv[++i];
        } else if (!strcmp(argv[i], "--row-sum") && i + 1 < argc) {
            g_row_sum = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--like") && i + 1 < argc) {
            like = argv[++i];
        } else {
            fprintf(stderr, "check_h5ad_structure: bad argument '%s'\n", argv[i]);
            return 2;
        }
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        printf("FAIL: %s does not open as HDF5\n", path);
        return 1;
    }
    char *enc = attr_string(f, "encoding-type");
    if (!enc || strcmp(enc, "anndata"))
        fail("root encoding-type is '%s', not 'anndata'%s", enc ? enc : "(none)", "");
    free(enc);
    char **obs = NULL, **var = NULL;
    int64_t n_obs = dataframe_index(f, "obs", &obs), n_var = dataframe_index(f, "var", &var);
    char sn[32];
    snprintf(sn, sizeof sn, "%lld", (long long)n_obs);
    if (n >= 0 && n_obs != n) fail("obs has %s names%s", sn, "");
    snprintf(sn, sizeof sn, "%lld", (long long)n_var);
    if (g >= 0 && n_var != g) fail("var has %s names%s", sn, "");
    char dpath[512];
    if (obsm && n_obs >= 0) {
        snprintf(dpath, sizeof dpath, "obsm/%s", obsm);
        check_matrix(f, dpath, n_obs, k, 0);
    }
    if (layer && n_obs >= 0 && n_var >= 0) {
        snprintf(dpath, sizeof dpath, "layers/%s", layer);
        check_matrix(f, dpath, n_obs, n_var, 1);
    }
    if (like) {
        hid_t fi = H5Fopen(like, H5F_ACC_RDONLY, H5P_DEFAULT);
        if (fi < 0) {
            fail("%s does not open%s", like, "");
        } else {
            char **obs_i = NULL, **var_i = NULL;
            int64_t no = dataframe_index(fi, "obs", &obs_i),
                    nv = dataframe_index(fi, "var", &var_i);
            same_names("obs", obs, n_obs, obs_i, no);
            same_names("var", var, n_var, var_i, nv);
            free_strings(obs_i, no);
            free_strings(var_i, nv);
            H5Fclose(fi);
        }
    }
    free_strings(obs, n_obs);
    free_strings(var, n_var);
    H5Fclose(f);
    if (!failures)
        printf("ok   %s: %lld cells x %lld genes%s%s\n", path, (long long)n_obs, (long long)n_var,
               obsm ? ", obsm/" : "", obsm ? obsm : "");
    return failures ? 1 : 0;
}

/* ---- --same A B [--except PATH ...] ---- */

typedef struct {
    hid_t other;
    char **except;
    int n_except;
    int compare; /* 1: compare values (A against B); 0: only check existence (B in A) */
    const char *name_a, *name_b;
    int64_t n_datasets;
} SameCtx;

static int excluded(const SameCtx *c, const char *name) {
    for (int i = 0; i < c->n_except; i++) {
        const char *e = c->except[i];
        if (*e == '/') e++;
        size_t l = strlen(e);
        if (!strncmp(name, e, l) && (name[l] == 0 || name[l] == '/')) return 1;
    }
    return 0;
}

static int same_dataset(hid_t da, hid_t db, const char *name) {
    hid_t ta = H5Dget_type(da), tb = H5Dget_type(db);
    hid_t sa = H5Dget_space(da), sb = H5Dget_space(db);
    (void)name;
    int ok = H5Tget_class(ta) == H5Tget_class(tb);
    hssize_t na = H5Sget_simple_extent_npoints(sa), nb = H5Sget_simple_extent_npoints(sb);
    int ra = H5Sget_simple_extent_ndims(sa), rb = H5Sget_simple_extent_ndims(sb);
    hsize_t dims_a[8] = {0}, dims_b[8] = {0};
    if (ra == rb && ra >= 0 && ra <= 8) {
        H5Sget_simple_extent_dims(sa, dims_a, NULL);
        H5Sget_simple_extent_dims(sb, dims_b, NULL);
        ok = ok && !memcmp(dims_a, dims_b, sizeof dims_a);
    } else {
        ok = 0;
    }
    if (ok && na > 0) {
        if (H5Tget_class(ta) == H5T_STRING && H5Tis_variable_str(ta) > 0) {
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, H5T_VARIABLE);
            H5Tset_cset(mt, H5Tget_cset(ta));
            ok = H5Tget_cset(ta) == H5Tget_cset(tb);
            char **a = calloc((size_t)na, sizeof *a), **b = calloc((size_t)nb, sizeof *b);
            ok = ok && H5Dread(da, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, a) >= 0 &&
                 H5Dread(db, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, b) >= 0;
            for (hssize_t i = 0; ok && i < na; i++)
                ok = !strcmp(a[i] ? a[i] : "", b[i] ? b[i] : "");
            for (hssize_t i = 0; i < na; i++) {
                H5free_memory(a[i]);
                H5free_memory(b[i]);
            }
            free(a);
            free(b);
            H5Tclose(mt);
        } else if (H5Tget_class(ta) == H5T_FLOAT && g_tol > 0) {
            double *a = malloc(sizeof(double) * (size_t)na),
                   *b = malloc(sizeof(double) * (size_t)na);
            ok = H5Dread(da, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, a) >= 0 &&
                 H5Dread(db, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, b) >= 0;
            for (hssize_t i = 0; ok && i < na; i++)
                ok = fabs(a[i] - b[i]) <= g_tol * (1 + fabs(a[i]));
            free(a);
            free(b);
        } else {
            hid_t ma = H5Tget_native_type(ta, H5T_DIR_ASCEND);
            size_t w = H5Tget_size(ma);
            char *a = malloc(w * (size_t)na), *b = malloc(w * (size_t)na);
            ok = H5Dread(da, ma, H5S_ALL, H5S_ALL, H5P_DEFAULT, a) >= 0 &&
                 H5Dread(db, ma, H5S_ALL, H5S_ALL, H5P_DEFAULT, b) >= 0 &&
                 !memcmp(a, b, w * (size_t)na);
            free(a);
            free(b);
            H5Tclose(ma);
        }
    }
    H5Tclose(ta);
    H5Tclose(tb);
    H5Sclose(sa);
    H5Sclose(sb);
    return ok;
}

static herr_t visit(hid_t obj, const char *name, const H5O_info_t *info, void *data) {
    SameCtx *c = data;
    if (!strcmp(name, ".") || excluded(c, name)) return 0;
    if (H5Lexists(c->other, name, H5P_DEFAULT) <= 0 ||
        H5Oexists_by_name(c->other, name, H5P_DEFAULT) <= 0) {
        fail("'%s' is in %s only", name, c->compare ? c->name_a : c->name_b);
        return 0;
    }
    if (info->type != H5O_TYPE_DATASET || !c->compare) return 0;
    c->n_datasets++;
    hid_t da = H5Dopen2(obj, name, H5P_DEFAULT), db = H5Dopen2(c->other, name, H5P_DEFAULT);
    if (da < 0 || db < 0 || !same_dataset(da, db, name))
        fail("dataset '%s' differs between the files%s", name, "");
    if (da >= 0) H5Dclose(da);
    if (db >= 0) H5Dclose(db);
    return 0;
}

static int same(int argc, char **argv) {
    if (argc < 4) return 2;
    SameCtx c = {0};
    char **ex = calloc((size_t)argc, sizeof *ex);
    for (int i = 4; i < argc; i++)
        if (!strcmp(argv[i], "--except") && i + 1 < argc)
            ex[c.n_except++] = argv[++i];
        else if (!strcmp(argv[i], "--tol") && i + 1 < argc)
            g_tol = atof(argv[++i]);
    c.except = ex;
    c.name_a = argv[2];
    c.name_b = argv[3];
    hid_t fa = H5Fopen(argv[2], H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t fb = H5Fopen(argv[3], H5F_ACC_RDONLY, H5P_DEFAULT);
    if (fa < 0 || fb < 0) {
        printf("FAIL: cannot open %s or %s\n", argv[2], argv[3]);
        return 1;
    }
    c.other = fb;
    c.compare = 1;
    H5Ovisit2(fa, H5_INDEX_NAME, H5_ITER_INC, visit, &c, H5O_INFO_BASIC);
    int64_t n = c.n_datasets;
    c.other = fa;
    c.compare = 0;
    H5Ovisit2(fb, H5_INDEX_NAME, H5_ITER_INC, visit, &c, H5O_INFO_BASIC);
    H5Fclose(fa);
    H5Fclose(fb);
    free(ex);
    if (!failures) printf("ok   %s and %s: %lld datasets equal\n", argv[2], argv[3], (long long)n);
    return failures ? 1 : 0;
}

/* --dims FILE PATH: prints the dimensions of one dataset ("1 5"). */
static int print_dims(const char *path, const char *name) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0 || H5Lexists(f, name, H5P_DEFAULT) <= 0) {
        printf("FAIL: no dataset %s in %s\n", name, path);
        if (f >= 0) H5Fclose(f);
        return 1;
    }
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT), sp = H5Dget_space(d);
    hsize_t dm[8] = {0};
    int nd = H5Sget_simple_extent_ndims(sp);
    if (nd > 8) nd = 8;
    H5Sget_simple_extent_dims(sp, dm, NULL);
    for (int i = 0; i < nd; i++) printf("%s%llu", i ? " " : "", (unsigned long long)dm[i]);
    printf("\n");
    H5Sclose(sp);
    H5Dclose(d);
    H5Fclose(f);
    return 0;
}

int main(int argc, char **argv) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (argc == 4 && !strcmp(argv[1], "--dims")) return print_dims(argv[2], argv[3]);
    if (argc >= 4 && !strcmp(argv[1], "--same")) return same(argc, argv);
    if (argc >= 2 && argv[1][0] != '-') return structure(argc, argv);
    fprintf(stderr, "usage: check_h5ad_structure FILE [--cells N] [--genes G] [--obsm KEY K]\n"
                    "           [--layer NAME] [--row-sum S] [--like INPUT]\n"
                    "       check_h5ad_structure --same A B [--except PATH ...] [--tol T]\n"
                    "       check_h5ad_structure --dims FILE DATASET\n");
    return 2;
}
