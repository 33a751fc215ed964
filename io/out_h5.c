#include "io/out_h5.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/util.h"

void out_h5_quiet(void) {
    static int done = 0;
    if (done) return;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    done = 1;
}

hid_t out_vlen_str_type(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    return t;
}

hid_t out_bool_type(void) {
    hid_t t = H5Tenum_create(H5T_STD_I8LE);
    int8_t v = 0;
    H5Tenum_insert(t, "FALSE", &v);
    v = 1;
    H5Tenum_insert(t, "TRUE", &v);
    return t;
}

static int write_attr(hid_t loc, const char *name, hid_t type, hid_t space, const void *buf) {
    if (H5Aexists(loc, name) > 0 && H5Adelete(loc, name) < 0) return -1;
    hid_t a = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0) return -1;
    herr_t rc = H5Awrite(a, type, buf);
    H5Aclose(a);
    return rc < 0 ? -1 : 0;
}

int out_attr_str(hid_t loc, const char *name, const char *value) {
    hid_t t = out_vlen_str_type(), s = H5Screate(H5S_SCALAR);
    int rc = write_attr(loc, name, t, s, &value);
    H5Sclose(s);
    H5Tclose(t);
    return rc;
}

int out_encoding(hid_t loc, const char *type, const char *version) {
    if (out_attr_str(loc, "encoding-type", type)) return -1;
    return out_attr_str(loc, "encoding-version", version);
}

int out_attr_strs(hid_t loc, const char *name, char *const *items, int64_t n) {
    hsize_t dim = (hsize_t)n;
    hid_t s = H5Screate_simple(1, &dim, NULL);
    int rc;
    if (n == 0) {
        double none = 0;
        rc = write_attr(loc, name, H5T_IEEE_F64LE, s, &none);
    } else {
        hid_t t = out_vlen_str_type();
        rc = write_attr(loc, name, t, s, items);
        H5Tclose(t);
    }
    H5Sclose(s);
    return rc;
}

int out_attr_bool(hid_t loc, const char *name, int value) {
    hid_t t = out_bool_type(), s = H5Screate(H5S_SCALAR);
    int8_t v = value ? 1 : 0;
    int rc = write_attr(loc, name, t, s, &v);
    H5Sclose(s);
    H5Tclose(t);
    return rc;
}

int out_attr_i64s(hid_t loc, const char *name, const int64_t *v, int n) {
    hsize_t dim = (hsize_t)n;
    hid_t s = H5Screate_simple(1, &dim, NULL);
    int rc = write_attr(loc, name, H5T_STD_I64LE, s, v);
    H5Sclose(s);
    return rc;
}

char *out_attr_get_str(hid_t loc, const char *name) {
    if (H5Aexists(loc, name) <= 0) return NULL;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return NULL;
    hid_t ft = H5Aget_type(a), sp = H5Aget_space(a);
    char *out = NULL;
    if (H5Tget_class(ft) == H5T_STRING && H5Sget_simple_extent_npoints(sp) == 1) {
        if (H5Tis_variable_str(ft) > 0) {
            hid_t mt = out_vlen_str_type();
            char *v = NULL;
            if (H5Aread(a, mt, &v) >= 0 && v) {
                out = av_strdup(v);
                H5free_memory(v);
            }
            H5Tclose(mt);
        } else {
            size_t n = H5Tget_size(ft);
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, n + 1);
            char *v = av_calloc(n + 2, 1);
            if (H5Aread(a, mt, v) >= 0)
                out = v;
            else
                free(v);
            H5Tclose(mt);
        }
    }
    H5Sclose(sp);
    H5Tclose(ft);
    H5Aclose(a);
    return out;
}

hid_t out_group_tracked(hid_t loc, const char *name) {
    hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
    H5Pset_link_creation_order(gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
    H5Pset_attr_creation_order(gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
    hid_t g = H5Gcreate2(loc, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    H5Pclose(gcpl);
    return g;
}

hid_t out_dict_group(hid_t loc, const char *name) {
    hid_t g;
    if (H5Lexists(loc, name, H5P_DEFAULT) > 0) return H5Gopen2(loc, name, H5P_DEFAULT);
    g = H5Gcreate2(loc, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return g;
    if (out_encoding(g, "dict", "0.1.0")) {
        H5Gclose(g);
        return -1;
    }
    return g;
}

#define OUT_SLICE ((int64_t)1 << 18)

int out_string_array(hid_t loc, const char *name, char *const *items, int64_t n,
                     const char *prefix) {
    hsize_t dim = (hsize_t)n;
    hid_t t = out_vlen_str_type(), fs = H5Screate_simple(1, &dim, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (!items && n > OUT_SLICE) {
        hsize_t chunk = 65536;
        H5Pset_chunk(dcpl, 1, &chunk);
    }
    hid_t d = H5Dcreate2(loc, name, t, fs, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    int rc = d < 0 ? -1 : 0;
    if (!rc && n > 0 && items) {
        rc = H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, items) < 0 ? -1 : 0;
    } else if (!rc && n > 0) {
        int64_t slice = n < OUT_SLICE ? n : OUT_SLICE;
        char **names = av_malloc((size_t)slice * sizeof *names);
        char *buf = av_malloc((size_t)slice * (strlen(prefix) + 24));
        for (int64_t lo = 0; lo < n && !rc; lo += slice) {
            int64_t m = n - lo < slice ? n - lo : slice;
            char *p = buf;
            for (int64_t i = 0; i < m; i++) {
                names[i] = p;
                p += sprintf(p, "%s%lld", prefix, (long long)(lo + i)) + 1;
            }
            hsize_t start = (hsize_t)lo, count = (hsize_t)m;
            hid_t ms = H5Screate_simple(1, &count, NULL);
            H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL);
            if (H5Dwrite(d, t, ms, fs, H5P_DEFAULT, names) < 0) rc = -1;
            H5Sclose(ms);
        }
        free(names);
        free(buf);
    }
    if (!rc) rc = out_encoding(d, "string-array", "0.2.0");
    if (d >= 0) H5Dclose(d);
    H5Sclose(fs);
    H5Tclose(t);
    return rc;
}

int out_array(hid_t loc, const char *name, hid_t mem_type, hid_t file_type, const void *data,
              int64_t rows, int64_t cols) {
    hsize_t dims[2] = {(hsize_t)rows, (hsize_t)(cols < 0 ? 0 : cols)};
    hid_t fs = H5Screate_simple(cols < 0 ? 1 : 2, dims, NULL);
    hid_t d = H5Dcreate2(loc, name, file_type, fs, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = d < 0 ? -1 : 0;
    int64_t total = rows * (cols < 0 ? 1 : cols);
    if (!rc && total > 0)
        rc = H5Dwrite(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0 ? -1 : 0;
    if (!rc) rc = out_encoding(d, "array", "0.2.0");
    if (d >= 0) H5Dclose(d);
    H5Sclose(fs);
    return rc;
}

char **out_attr_get_strs(hid_t loc, const char *name, int64_t *n) {
    *n = 0;
    if (H5Aexists(loc, name) <= 0) return NULL;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) {
        *n = -1;
        return NULL;
    }
    hid_t ft = H5Aget_type(a), sp = H5Aget_space(a);
    hssize_t m = H5Sget_simple_extent_npoints(sp);
    char **out = NULL;
    if (H5Tget_class(ft) != H5T_STRING || m <= 0) {
        *n = m < 0 ? -1 : (H5Tget_class(ft) == H5T_STRING || m == 0 ? 0 : -1);
    } else if (H5Tis_variable_str(ft) > 0) {
        hid_t mt = out_vlen_str_type();
        char **v = av_calloc((size_t)m, sizeof *v);
        if (H5Aread(a, mt, v) >= 0) {
            out = av_calloc((size_t)m, sizeof *out);
            for (hssize_t i = 0; i < m; i++) out[i] = av_strdup(v[i] ? v[i] : "");
            H5Dvlen_reclaim(mt, sp, H5P_DEFAULT, v);
            *n = m;
        } else {
            *n = -1;
        }
        free(v);
        H5Tclose(mt);
    } else {
        size_t w = H5Tget_size(ft);
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, w);
        H5Tset_strpad(mt, H5T_STR_NULLPAD);
        char *buf = av_calloc((size_t)m * w + 1, 1);
        if (H5Aread(a, mt, buf) >= 0) {
            out = av_calloc((size_t)m, sizeof *out);
            for (hssize_t i = 0; i < m; i++) {
                out[i] = av_calloc(w + 1, 1);
                memcpy(out[i], buf + (size_t)i * w, w);
            }
            *n = m;
        } else {
            *n = -1;
        }
        free(buf);
        H5Tclose(mt);
    }
    H5Sclose(sp);
    H5Tclose(ft);
    H5Aclose(a);
    return out;
}
