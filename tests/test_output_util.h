/* Structural checks of written .h5ad files, shared by the output and simulate tests:
 * every attribute, type and shape that formats.md 1.2/1.10 requires. */
#ifndef AV_TEST_OUTPUT_UTIL_H
#define AV_TEST_OUTPUT_UTIL_H
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tu_fails = 0;
#define TU_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: FAIL %s: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            tu_fails++;                                                                            \
        }                                                                                          \
    } while (0)

/* A scalar vlen UTF-8 string attribute with this value. */
static inline int tu_attr_is(hid_t loc, const char *obj, const char *name, const char *want) {
    hid_t a = H5Aopen_by_name(loc, obj, name, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0) return 0;
    hid_t t = H5Aget_type(a), s = H5Aget_space(a);
    int ok = H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) > 0 &&
             H5Tget_cset(t) == H5T_CSET_UTF8 && H5Sget_simple_extent_type(s) == H5S_SCALAR;
    if (ok) {
        char *v = NULL;
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5T_CSET_UTF8);
        ok = H5Aread(a, mt, &v) >= 0 && v && !strcmp(v, want);
        if (v) H5free_memory(v);
        H5Tclose(mt);
    }
    H5Sclose(s);
    H5Tclose(t);
    H5Aclose(a);
    return ok;
}

static inline int tu_enc(hid_t f, const char *obj, const char *type, const char *version) {
    return tu_attr_is(f, obj, "encoding-type", type) &&
           tu_attr_is(f, obj, "encoding-version", version);
}

/* Dataset of this class/size (size 0 = any) and shape (ndims 1 or 2). */
static inline int tu_dset(hid_t f, const char *name, H5T_class_t cls, size_t size, int ndims,
                          long long d0, long long d1) {
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) return 0;
    hid_t t = H5Dget_type(d), s = H5Dget_space(d);
    hsize_t dims[2] = {0, 0};
    int nd = H5Sget_simple_extent_dims(s, dims, NULL);
    int ok = H5Tget_class(t) == cls && (size == 0 || H5Tget_size(t) == size) && nd == ndims &&
             (long long)dims[0] == d0 && (ndims < 2 || (long long)dims[1] == d1);
    if (cls == H5T_STRING) ok = ok && H5Tis_variable_str(t) > 0 && H5Tget_cset(t) == H5T_CSET_UTF8;
    if (cls == H5T_INTEGER)
        ok = ok && H5Tget_sign(t) == H5T_SGN_2 && H5Tget_order(t) == H5T_ORDER_LE;
    H5Sclose(s);
    H5Tclose(t);
    H5Dclose(d);
    return ok;
}

/* ordered: scalar enum of i8 with FALSE = 0, TRUE = 1, value 0. */
static inline int tu_ordered_false(hid_t f, const char *obj) {
    hid_t a = H5Aopen_by_name(f, obj, "ordered", H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0) return 0;
    hid_t t = H5Aget_type(a), s = H5Aget_space(a);
    int ok = H5Tget_class(t) == H5T_ENUM && H5Sget_simple_extent_type(s) == H5S_SCALAR &&
             H5Tget_nmembers(t) == 2;
    if (ok) {
        hid_t base = H5Tget_super(t);
        ok = H5Tequal(base, H5T_STD_I8LE) > 0;
        H5Tclose(base);
        char name[16];
        int8_t v = 0;
        ok = ok && H5Tenum_nameof(t, &v, name, sizeof name) >= 0 && !strcmp(name, "FALSE");
        v = 1;
        ok = ok && H5Tenum_nameof(t, &v, name, sizeof name) >= 0 && !strcmp(name, "TRUE");
        int8_t got = 5;
        ok = ok && H5Aread(a, t, &got) >= 0 && got == 0;
    }
    H5Sclose(s);
    H5Tclose(t);
    H5Aclose(a);
    return ok;
}

/* column-order: vlen strings equal to want (n > 0) or an empty f64 array (n == 0). */
static inline int tu_column_order(hid_t f, const char *obj, const char *const *want, int n) {
    hid_t a = H5Aopen_by_name(f, obj, "column-order", H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0) return 0;
    hid_t t = H5Aget_type(a), s = H5Aget_space(a);
    int ok = H5Sget_simple_extent_type(s) == H5S_SIMPLE && H5Sget_simple_extent_npoints(s) == n;
    if (ok && n == 0) ok = H5Tequal(t, H5T_IEEE_F64LE) > 0;
    if (ok && n > 0) {
        ok = H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) > 0 &&
             H5Tget_cset(t) == H5T_CSET_UTF8;
        char **v = calloc((size_t)n, sizeof *v);
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5T_CSET_UTF8);
        ok = ok && H5Aread(a, mt, v) >= 0;
        for (int i = 0; i < n && ok; i++) ok = v[i] && !strcmp(v[i], want[i]);
        if (ok) H5Dvlen_reclaim(mt, s, H5P_DEFAULT, v);
        H5Tclose(mt);
        free(v);
    }
    H5Sclose(s);
    H5Tclose(t);
    H5Aclose(a);
    return ok;
}

/* Dataframe group: encoding, _index, index dataset of length n, creation order tracked. */
static inline int tu_dataframe(hid_t f, const char *obj, long long n, const char *const *cols,
                               int n_cols) {
    int ok = tu_enc(f, obj, "dataframe", "0.2.0") && tu_attr_is(f, obj, "_index", "_index") &&
             tu_column_order(f, obj, cols, n_cols);
    char idx[256];
    snprintf(idx, sizeof idx, "%s/_index", obj);
    ok = ok && tu_dset(f, idx, H5T_STRING, 0, 1, n, 0) && tu_enc(f, idx, "string-array", "0.2.0");
    return ok;
}

static inline int tu_tracked(hid_t f, const char *obj) {
    hid_t g = H5Gopen2(f, obj, H5P_DEFAULT);
    if (g < 0) return 0;
    hid_t p = H5Gget_create_plist(g);
    unsigned lf = 0, af = 0;
    H5Pget_link_creation_order(p, &lf);
    H5Pget_attr_creation_order(p, &af);
    H5Pclose(p);
    H5Gclose(g);
    return (lf & H5P_CRT_ORDER_TRACKED) && (af & H5P_CRT_ORDER_TRACKED);
}

/* shape attribute: i64, SIMPLE (2). */
static inline int tu_shape(hid_t f, const char *obj, long long r, long long c) {
    hid_t a = H5Aopen_by_name(f, obj, "shape", H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0) return 0;
    hid_t t = H5Aget_type(a), s = H5Aget_space(a);
    long long v[2] = {-1, -1};
    int ok = H5Tequal(t, H5T_STD_I64LE) > 0 && H5Sget_simple_extent_npoints(s) == 2 &&
             H5Aread(a, H5T_NATIVE_LLONG, v) >= 0 && v[0] == r && v[1] == c;
    H5Sclose(s);
    H5Tclose(t);
    H5Aclose(a);
    return ok;
}

/* Reads a string from a 1-D vlen string dataset at index i (malloc'ed). */
static inline char *tu_string_at(hid_t f, const char *name, long long i) {
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) return NULL;
    hid_t fs = H5Dget_space(d);
    hsize_t start = (hsize_t)i, one = 1;
    hid_t ms = H5Screate_simple(1, &one, NULL);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &one, NULL);
    hid_t mt = H5Tcopy(H5T_C_S1);
    H5Tset_size(mt, H5T_VARIABLE);
    H5Tset_cset(mt, H5T_CSET_UTF8);
    char *v = NULL, *out = NULL;
    if (H5Dread(d, mt, ms, fs, H5P_DEFAULT, &v) >= 0 && v) {
        out = strdup(v);
        H5free_memory(v);
    }
    H5Tclose(mt);
    H5Sclose(ms);
    H5Sclose(fs);
    H5Dclose(d);
    return out;
}

/* Reads a whole 1-D numeric dataset converted to mem_type into a malloc'ed buffer. */
static inline void *tu_read_all(hid_t f, const char *name, hid_t mem_type, size_t elem,
                                long long *n) {
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) return NULL;
    hid_t s = H5Dget_space(d);
    *n = (long long)H5Sget_simple_extent_npoints(s);
    void *buf = malloc((size_t)(*n > 0 ? *n : 1) * elem);
    if (*n > 0 && H5Dread(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        free(buf);
        buf = NULL;
    }
    H5Sclose(s);
    H5Dclose(d);
    return buf;
}

#endif
