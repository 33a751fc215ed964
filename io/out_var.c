/* var columns added to an existing .h5ad, obs copied from another one (io/out_var.h). */
#include "io/out_var.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/h5util.h"
#include "io/out_h5.h"
#include "src/util.h"

/* The length of a dataframe group's index (any encoding the readers know); -1 if none. */
static int64_t index_length(hid_t g) {
    char *idx = out_attr_get_str(g, "_index");
    int64_t n = idx ? h5u_column_length(g, idx) : -1;
    free(idx);
    return n;
}

static int write_col(hid_t g, const AvVarColumn *c, int64_t n) {
    switch (c->type) {
    case AV_VARCOL_F64:
        return out_array(g, c->name, H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, c->data, n, -1);
    case AV_VARCOL_F32:
        return out_array(g, c->name, H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, c->data, n, -1);
    case AV_VARCOL_I64:
        return out_array(g, c->name, H5T_NATIVE_INT64, H5T_STD_I64LE, c->data, n, -1);
    case AV_VARCOL_BOOL: {
        hid_t t = out_bool_type();
        int8_t *v = av_malloc((size_t)n + 1);
        for (int64_t i = 0; i < n; i++) v[i] = ((const uint8_t *)c->data)[i] ? 1 : 0;
        int rc = out_array(g, c->name, t, t, v, n, -1);
        free(v);
        H5Tclose(t);
        return rc;
    }
    }
    return -1;
}

int av_h5ad_add_var_columns(const char *path, const AvVarColumn *cols, int n_cols, int64_t n,
                            char *err) {
    out_h5_quiet();
    for (int i = 0; i < n_cols; i++)
        if (!cols[i].name || !*cols[i].name || strchr(cols[i].name, '/') ||
            !strcmp(cols[i].name, "_index"))
            return av_err(err, "%s: invalid var column name '%s'", path,
                          cols[i].name ? cols[i].name : "(null)");
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) return av_err(err, "%s: cannot open for writing", path);
    hid_t g = H5Lexists(f, "var", H5P_DEFAULT) > 0 ? H5Gopen2(f, "var", H5P_DEFAULT) : -1;
    int rc = 0;
    if (g < 0) rc = av_err(err, "%s: no /var dataframe", path);
    if (!rc && index_length(g) != n)
        rc = av_err(err, "%s: /var is not a dataframe of %lld genes", path, (long long)n);
    int64_t n_old = 0;
    char **old = rc ? NULL : out_attr_get_strs(g, "column-order", &n_old);
    if (!rc && n_old < 0) rc = av_err(err, "%s: cannot read /var column-order", path);
    char *idx = rc ? NULL : out_attr_get_str(g, "_index");
    char **order = av_calloc((size_t)(n_old > 0 ? n_old : 0) + (size_t)n_cols + 1, sizeof *order);
    int64_t n_order = 0;
    for (int64_t i = 0; i < n_old; i++) order[n_order++] = old[i];
    for (int i = 0; i < n_cols && !rc; i++) {
        if (idx && !strcmp(idx, cols[i].name)) {
            rc = av_err(err, "%s: var column '%s' is the name of the index", path, cols[i].name);
            break;
        }
        if (H5Lexists(g, cols[i].name, H5P_DEFAULT) > 0) H5Ldelete(g, cols[i].name, H5P_DEFAULT);
        if (write_col(g, &cols[i], n)) {
            rc = av_err(err, "%s: cannot write var column '%s' (disk full?)", path, cols[i].name);
            break;
        }
        int seen = 0;
        for (int64_t j = 0; j < n_order; j++) seen |= !strcmp(order[j], cols[i].name);
        if (!seen) order[n_order++] = (char *)cols[i].name;
    }
    if (!rc && out_attr_strs(g, "column-order", order, n_order))
        rc = av_err(err, "%s: cannot write /var column-order", path);
    free(order);
    av_free_strings(old, n_old > 0 ? n_old : 0);
    free(idx);
    if (g >= 0) H5Gclose(g);
    if (out_file_close(f) && !rc)
        rc = av_err(err, "%s: writing the file failed (disk full?)", path);
    return rc ? -1 : 0;
}

/* obs of f is a modern dataframe: encoding-type "dataframe" and an index of n rows */
static int modern_obs(hid_t f, int64_t *n) {
    *n = -1;
    if (H5Lexists(f, "obs", H5P_DEFAULT) <= 0) return 0;
    H5O_info_t info;
    if (H5Oget_info_by_name(f, "obs", &info, H5P_DEFAULT) < 0 || info.type != H5O_TYPE_GROUP)
        return 0;
    hid_t g = H5Gopen2(f, "obs", H5P_DEFAULT);
    char *enc = out_attr_get_str(g, "encoding-type");
    int ok = enc && !strcmp(enc, "dataframe");
    if (ok) *n = index_length(g);
    free(enc);
    H5Gclose(g);
    return ok && *n >= 0;
}

int av_h5ad_copy_obs(const char *path, const char *src, char *err) {
    out_h5_quiet();
    hid_t s = H5Fis_hdf5(src) > 0 ? H5Fopen(src, H5F_ACC_RDONLY, H5P_DEFAULT) : -1;
    if (s < 0) return 1;
    int64_t ns = -1, nd = -1;
    int rc = 1;
    if (modern_obs(s, &ns)) {
        hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
        if (f < 0) {
            rc = av_err(err, "%s: cannot open for writing", path) ? -1 : -1;
        } else {
            if (modern_obs(f, &nd) && nd == ns) {
                rc = H5Ldelete(f, "obs", H5P_DEFAULT) < 0 ||
                             H5Ocopy(s, "obs", f, "obs", H5P_DEFAULT, H5P_DEFAULT) < 0
                         ? -1
                         : 0;
                if (rc) av_err(err, "%s: cannot copy obs from %s", path, src);
            }
            if (out_file_close(f) && rc >= 0)
                rc = av_err(err, "%s: writing the file failed (disk full?)", path) ? -1 : -1;
        }
    }
    H5Fclose(s);
    return rc;
}

typedef struct {
    hid_t src, dst;
    int failed;
    char name[256];
} CopyCtx;

static herr_t copy_one(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    (void)g;
    (void)info;
    CopyCtx *c = data;
    if (H5Lexists(c->dst, name, H5P_DEFAULT) > 0) return 0;
    if (H5Ocopy(c->src, name, c->dst, name, H5P_DEFAULT, H5P_DEFAULT) < 0) {
        snprintf(c->name, sizeof c->name, "%s", name);
        c->failed = 1;
        return 1;
    }
    return 0;
}

int av_h5ad_copy_missing(const char *path, const char *src, char *err) {
    out_h5_quiet();
    hid_t s = H5Fis_hdf5(src) > 0 ? H5Fopen(src, H5F_ACC_RDONLY, H5P_DEFAULT) : -1;
    if (s < 0) return 1;
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    int rc = 0;
    if (f < 0) {
        rc = av_err(err, "%s: cannot open for writing", path);
    } else {
        CopyCtx c = {s, f, 0, ""};
        H5Literate(s, H5_INDEX_NAME, H5_ITER_INC, NULL, copy_one, &c);
        if (c.failed)
            rc = av_err(err, "%s: cannot copy /%s from %s (disk full?)", path, c.name, src);
        if (out_file_close(f) && !rc)
            rc = av_err(err, "%s: writing the file failed (disk full?)", path);
    }
    H5Fclose(s);
    return rc ? -1 : 0;
}
