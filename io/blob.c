/* The model file: one HDF5 file of 2-D float32 datasets (named arrays, '/' makes groups),
 * vlen string datasets (string lists) and string attributes on the root (key/values),
 * plus the root attribute atlasvi_blob_version = 1. */
#include "io/blob.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/out_h5.h"
#include "src/util.h"

#define BLOB_VERSION 1
#define BLOB_VERSION_KEY "atlasvi_blob_version"

/* ---- in memory ---- */

void av_blob_add_array(AvBlob *b, const char *name, int64_t rows, int64_t cols, const float *data) {
    AvArray *a = NULL;
    for (int i = 0; i < b->n_arrays; i++)
        if (!strcmp(b->arrays[i].name, name)) a = &b->arrays[i];
    if (a) {
        free(a->data);
    } else {
        b->arrays = av_realloc(b->arrays, (size_t)(b->n_arrays + 1) * sizeof *b->arrays);
        a = &b->arrays[b->n_arrays++];
        a->name = av_strdup(name);
    }
    size_t n = (size_t)(rows * cols);
    a->rows = rows;
    a->cols = cols;
    a->data = av_malloc(n * sizeof(float));
    if (n) memcpy(a->data, data, n * sizeof(float));
}

void av_blob_add_strings(AvBlob *b, const char *name, int64_t n, char *const *items) {
    AvStrings *s = NULL;
    for (int i = 0; i < b->n_strings; i++)
        if (!strcmp(b->strings[i].name, name)) s = &b->strings[i];
    if (s) {
        av_free_strings(s->items, s->n);
    } else {
        b->strings = av_realloc(b->strings, (size_t)(b->n_strings + 1) * sizeof *b->strings);
        s = &b->strings[b->n_strings++];
        s->name = av_strdup(name);
    }
    s->n = n;
    s->items = av_calloc((size_t)n, sizeof *s->items);
    for (int64_t i = 0; i < n; i++) s->items[i] = av_strdup(items[i] ? items[i] : "");
}

void av_blob_set_attr(AvBlob *b, const char *key, const char *value) {
    for (int i = 0; i < b->n_attrs; i++)
        if (!strcmp(b->attrs[i].key, key)) {
            free(b->attrs[i].value);
            b->attrs[i].value = av_strdup(value);
            return;
        }
    b->attrs = av_realloc(b->attrs, (size_t)(b->n_attrs + 1) * sizeof *b->attrs);
    b->attrs[b->n_attrs].key = av_strdup(key);
    b->attrs[b->n_attrs].value = av_strdup(value);
    b->n_attrs++;
}

const AvArray *av_blob_array(const AvBlob *b, const char *name) {
    for (int i = 0; i < b->n_arrays; i++)
        if (!strcmp(b->arrays[i].name, name)) return &b->arrays[i];
    return NULL;
}

const AvStrings *av_blob_strings(const AvBlob *b, const char *name) {
    for (int i = 0; i < b->n_strings; i++)
        if (!strcmp(b->strings[i].name, name)) return &b->strings[i];
    return NULL;
}

const char *av_blob_attr(const AvBlob *b, const char *key) {
    for (int i = 0; i < b->n_attrs; i++)
        if (!strcmp(b->attrs[i].key, key)) return b->attrs[i].value;
    return NULL;
}

void av_blob_free(AvBlob *b) {
    for (int i = 0; i < b->n_arrays; i++) {
        free(b->arrays[i].name);
        free(b->arrays[i].data);
    }
    for (int i = 0; i < b->n_strings; i++) {
        free(b->strings[i].name);
        av_free_strings(b->strings[i].items, b->strings[i].n);
    }
    for (int i = 0; i < b->n_attrs; i++) {
        free(b->attrs[i].key);
        free(b->attrs[i].value);
    }
    free(b->arrays);
    free(b->strings);
    free(b->attrs);
    memset(b, 0, sizeof *b);
}

/* ---- save ---- */

/* Names are '/'-separated paths of non-empty components other than "." and "..". */
static int valid_name(const char *name) {
    if (!name || !*name || name[0] == '/' || name[strlen(name) - 1] == '/') return 0;
    if (strstr(name, "//")) return 0;
    const char *p = name;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.')) return 0;
        p += n + (e ? 1 : 0);
    }
    return 1;
}

static hid_t tracked_gcpl(void) {
    hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
    H5Pset_link_creation_order(gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
    return gcpl;
}

/* Opens (creating as needed) the group holding `name`; returns the last component. */
static hid_t parent_group(hid_t f, const char *name, const char **leaf) {
    hid_t g = H5Gopen2(f, "/", H5P_DEFAULT);
    const char *p = name;
    char part[4096];
    for (;;) {
        const char *e = strchr(p, '/');
        if (!e) break;
        size_t n = (size_t)(e - p);
        if (n >= sizeof part) {
            H5Gclose(g);
            return -1;
        }
        memcpy(part, p, n);
        part[n] = 0;
        hid_t next;
        if (H5Lexists(g, part, H5P_DEFAULT) > 0) {
            next = H5Gopen2(g, part, H5P_DEFAULT);
        } else {
            hid_t gcpl = tracked_gcpl();
            next = H5Gcreate2(g, part, H5P_DEFAULT, gcpl, H5P_DEFAULT);
            H5Pclose(gcpl);
        }
        H5Gclose(g);
        if (next < 0) return -1;
        g = next;
        p = e + 1;
    }
    *leaf = p;
    return g;
}

static int save_array(hid_t f, const AvArray *a) {
    const char *leaf;
    hid_t g = parent_group(f, a->name, &leaf);
    if (g < 0) return -1;
    hsize_t dims[2] = {(hsize_t)a->rows, (hsize_t)a->cols};
    hid_t s = H5Screate_simple(2, dims, NULL);
    hid_t d = H5Dcreate2(g, leaf, H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = d < 0 ? -1 : 0;
    if (!rc && a->rows * a->cols > 0)
        rc = H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, a->data) < 0 ? -1 : 0;
    if (d >= 0) H5Dclose(d);
    H5Sclose(s);
    H5Gclose(g);
    return rc;
}

static int save_strings(hid_t f, const AvStrings *st) {
    const char *leaf;
    hid_t g = parent_group(f, st->name, &leaf);
    if (g < 0) return -1;
    hsize_t dim = (hsize_t)st->n;
    hid_t s = H5Screate_simple(1, &dim, NULL), t = out_vlen_str_type();
    hid_t d = H5Dcreate2(g, leaf, t, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = d < 0 ? -1 : 0;
    if (!rc && st->n > 0) {
        const char **items = av_malloc((size_t)st->n * sizeof *items);
        for (int64_t i = 0; i < st->n; i++) items[i] = st->items[i] ? st->items[i] : "";
        rc = H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, items) < 0 ? -1 : 0;
        free(items);
    }
    if (d >= 0) H5Dclose(d);
    H5Tclose(t);
    H5Sclose(s);
    H5Gclose(g);
    return rc;
}

/* Every name valid, distinct, and no name a group prefix of another. */
static int check_names(const char *path, const AvBlob *b, char *err) {
    int n = b->n_arrays + b->n_strings;
    const char **names = av_malloc((size_t)(n + 1) * sizeof *names);
    for (int i = 0; i < b->n_arrays; i++) names[i] = b->arrays[i].name;
    for (int i = 0; i < b->n_strings; i++) names[b->n_arrays + i] = b->strings[i].name;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        if (!valid_name(names[i])) {
            rc = av_err(err, "%s: invalid array name '%s'", path, names[i] ? names[i] : "(null)");
            break;
        }
        size_t li = strlen(names[i]);
        for (int j = 0; j < n && !rc; j++) {
            if (i == j) continue;
            if (!strcmp(names[i], names[j]))
                rc = av_err(err, "%s: name '%s' is used twice", path, names[i]);
            else if (!strncmp(names[i], names[j], li) && names[j][li] == '/')
                rc = av_err(err, "%s: '%s' is both an entry and a group of '%s'", path, names[i],
                            names[j]);
        }
    }
    for (int i = 0; i < b->n_attrs && !rc; i++) {
        if (!b->attrs[i].key || !*b->attrs[i].key || !strcmp(b->attrs[i].key, BLOB_VERSION_KEY))
            rc = av_err(err, "%s: invalid attribute key '%s'", path,
                        b->attrs[i].key ? b->attrs[i].key : "(null)");
    }
    for (int i = 0; i < b->n_arrays && !rc; i++)
        if (b->arrays[i].rows < 0 || b->arrays[i].cols < 0)
            rc = av_err(err, "%s: array '%s' has a negative shape", path, b->arrays[i].name);
    free(names);
    return rc;
}

int av_blob_save(const char *path, const AvBlob *b, char *err) {
    out_h5_quiet();
    if (check_names(path, b, err)) return -1;
    size_t pl = strlen(path);
    char *tmp = av_malloc(pl + 5);
    snprintf(tmp, pl + 5, "%s.tmp", path);
    unlink(tmp);
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    H5Pset_link_creation_order(fcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
    H5Pset_attr_creation_order(fcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
    H5Pclose(fcpl);
    if (f < 0) {
        av_err(err, "%s: cannot create the temporary file '%s' (is the folder writable?)", path,
               tmp);
        free(tmp);
        return -1;
    }
    int rc = 0;
    int64_t version = BLOB_VERSION;
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, BLOB_VERSION_KEY, H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0 || H5Awrite(a, H5T_NATIVE_INT64, &version) < 0)
        rc = av_err(err, "%s: cannot write the version attribute", path);
    if (a >= 0) H5Aclose(a);
    H5Sclose(s);
    for (int i = 0; i < b->n_attrs && !rc; i++)
        if (out_attr_str(f, b->attrs[i].key, b->attrs[i].value ? b->attrs[i].value : ""))
            rc = av_err(err, "%s: cannot write attribute '%s'", path, b->attrs[i].key);
    for (int i = 0; i < b->n_arrays && !rc; i++)
        if (save_array(f, &b->arrays[i]))
            rc = av_err(err, "%s: cannot write array '%s' (disk full?)", path, b->arrays[i].name);
    for (int i = 0; i < b->n_strings && !rc; i++)
        if (save_strings(f, &b->strings[i]))
            rc = av_err(err, "%s: cannot write strings '%s'", path, b->strings[i].name);
    herr_t fl = rc ? 0 : H5Fflush(f, H5F_SCOPE_GLOBAL);
    if ((H5Fclose(f) < 0 || fl < 0) && !rc)
        rc = av_err(err, "%s: writing the file failed (disk full?)", path);
    if (!rc && rename(tmp, path) != 0)
        rc = av_err(err, "%s: cannot move '%s' into place", path, tmp);
    if (rc) unlink(tmp);
    free(tmp);
    return rc;
}

/* ---- load ---- */

typedef struct {
    AvBlob *b;
    const char *path;
    char *err;
    int failed;
} LoadCtx;

/* Whether a dataset declares more elements (of elem_bytes in memory) than its storage can
 * hold: a corrupt or crafted dataspace can declare any shape at no cost (HDF5 returns fill
 * values for what is not stored), and the arrays are allocated from it. Compression is
 * allowed for (deflate's ratio is at most about 1032:1), plus 1 MiB for small datasets. */
static int declares_too_much(hid_t d, hsize_t n, size_t elem_bytes) {
    double limit = 1100.0 * (double)H5Dget_storage_size(d) + (double)(1 << 20);
    return (double)n * (double)elem_bytes > limit;
}

static herr_t load_item(hid_t root, const char *name, const H5L_info_t *linfo, void *op) {
    LoadCtx *c = op;
    H5O_info_t info;
    if (linfo->type != H5L_TYPE_HARD) return 0;
    if (H5Oget_info_by_name(root, name, &info, H5P_DEFAULT) < 0) {
        av_err(c->err, "%s: cannot read '%s' (file truncated or corrupt?)", c->path, name);
        c->failed = 1;
        return -1;
    }
    if (info.type != H5O_TYPE_DATASET) return 0;
    hid_t d = H5Dopen2(root, name, H5P_DEFAULT);
    if (d < 0) {
        av_err(c->err, "%s: cannot open '%s' (file truncated or corrupt?)", c->path, name);
        c->failed = 1;
        return -1;
    }
    hid_t t = H5Dget_type(d), s = H5Dget_space(d);
    int nd = H5Sget_simple_extent_ndims(s);
    hsize_t dims[2] = {0, 0};
    int rc = 0;
    int is_array = H5Tget_class(t) == H5T_FLOAT && nd == 2;
    int is_strings = H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) > 0 && nd == 1;
    if (is_array || is_strings) H5Sget_simple_extent_dims(s, dims, NULL);
    /* 16 bytes per string: its global heap ID in the file */
    if ((is_array && dims[1] && dims[0] > (hsize_t)INT64_MAX / dims[1]) ||
        (is_array && declares_too_much(d, dims[0] * dims[1], sizeof(float))) ||
        (is_strings && declares_too_much(d, dims[0], 16))) {
        rc = av_err(c->err, "%s: '%s' declares %llu x %llu values but stores %llu bytes (corrupt?)",
                    c->path, name, (unsigned long long)dims[0],
                    (unsigned long long)(is_array ? dims[1] : 1),
                    (unsigned long long)H5Dget_storage_size(d));
    } else if (is_array) {
        float *data = av_malloc((size_t)(dims[0] * dims[1]) * sizeof(float));
        if (dims[0] * dims[1] > 0 &&
            H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
            rc = av_err(c->err, "%s: cannot read array '%s' (file truncated or corrupt?)", c->path,
                        name);
            free(data);
        } else {
            AvBlob *b = c->b;
            b->arrays = av_realloc(b->arrays, (size_t)(b->n_arrays + 1) * sizeof *b->arrays);
            AvArray *a = &b->arrays[b->n_arrays++];
            a->name = av_strdup(name);
            a->rows = (int64_t)dims[0];
            a->cols = (int64_t)dims[1];
            a->data = data;
        }
    } else if (is_strings) {
        hid_t mt = out_vlen_str_type();
        char **raw = av_calloc((size_t)dims[0], sizeof *raw);
        if (dims[0] > 0 && H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) < 0) {
            rc = av_err(c->err, "%s: cannot read strings '%s' (file truncated or corrupt?)",
                        c->path, name);
        } else {
            AvBlob *b = c->b;
            b->strings = av_realloc(b->strings, (size_t)(b->n_strings + 1) * sizeof *b->strings);
            AvStrings *st = &b->strings[b->n_strings++];
            st->name = av_strdup(name);
            st->n = (int64_t)dims[0];
            st->items = av_calloc((size_t)dims[0], sizeof *st->items);
            for (hsize_t i = 0; i < dims[0]; i++) st->items[i] = av_strdup(raw[i] ? raw[i] : "");
            if (dims[0] > 0) H5Dvlen_reclaim(mt, s, H5P_DEFAULT, raw);
        }
        free(raw);
        H5Tclose(mt);
    } else {
        rc = av_err(c->err, "%s: '%s' is neither a 2-D float array nor a string list", c->path,
                    name);
    }
    H5Sclose(s);
    H5Tclose(t);
    H5Dclose(d);
    if (rc) {
        c->failed = 1;
        return -1;
    }
    return 0;
}

static herr_t load_attr(hid_t loc, const char *name, const H5A_info_t *ainfo, void *op) {
    (void)ainfo;
    LoadCtx *c = op;
    if (!strcmp(name, BLOB_VERSION_KEY)) return 0;
    char *v = out_attr_get_str(loc, name);
    if (!v) {
        av_err(c->err, "%s: attribute '%s' is not a string", c->path, name);
        c->failed = 1;
        return -1;
    }
    AvBlob *b = c->b;
    b->attrs = av_realloc(b->attrs, (size_t)(b->n_attrs + 1) * sizeof *b->attrs);
    b->attrs[b->n_attrs].key = av_strdup(name);
    b->attrs[b->n_attrs].value = v;
    b->n_attrs++;
    return 0;
}

/* Drops the arrays and string lists read so far (keeps the attributes). */
static void clear_items(AvBlob *b) {
    for (int i = 0; i < b->n_arrays; i++) {
        free(b->arrays[i].name);
        free(b->arrays[i].data);
    }
    for (int i = 0; i < b->n_strings; i++) {
        free(b->strings[i].name);
        av_free_strings(b->strings[i].items, b->strings[i].n);
    }
    b->n_arrays = b->n_strings = 0;
}

static int check_version(hid_t f, const char *path, char *err) {
    if (H5Aexists(f, BLOB_VERSION_KEY) <= 0)
        return av_err(err, "%s: not an atlasvi model file (no %s attribute)", path,
                      BLOB_VERSION_KEY);
    hid_t a = H5Aopen(f, BLOB_VERSION_KEY, H5P_DEFAULT);
    hid_t t = H5Aget_type(a), s = H5Aget_space(a);
    int64_t v = -1;
    int ok = H5Tget_class(t) == H5T_INTEGER && H5Sget_simple_extent_npoints(s) == 1 &&
             H5Aread(a, H5T_NATIVE_INT64, &v) >= 0;
    H5Sclose(s);
    H5Tclose(t);
    H5Aclose(a);
    if (!ok) return av_err(err, "%s: unreadable %s attribute", path, BLOB_VERSION_KEY);
    if (v != BLOB_VERSION)
        return av_err(err, "%s: model file version %lld, this atlasvi reads version %d", path,
                      (long long)v, BLOB_VERSION);
    return 0;
}

int av_blob_load(const char *path, AvBlob *b, char *err) {
    out_h5_quiet();
    memset(b, 0, sizeof *b);
    if (access(path, R_OK) != 0) return av_err(err, "%s: no such file or not readable", path);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        if (H5Fis_hdf5(path) <= 0)
            return av_err(err, "%s: not an HDF5 model file (or truncated)", path);
        return av_err(err, "%s: cannot open the model file (truncated or corrupt?)", path);
    }
    if (check_version(f, path, err)) {
        H5Fclose(f);
        return -1;
    }
    LoadCtx c = {b, path, err, 0};
    hid_t root = H5Gopen2(f, "/", H5P_DEFAULT);
    hsize_t idx = 0;
    herr_t rc = H5Aiterate2(root, H5_INDEX_CRT_ORDER, H5_ITER_INC, &idx, load_attr, &c);
    if (rc < 0 && !c.failed) { /* no creation-order index: written by another tool */
        av_blob_free(b);
        idx = 0;
        rc = H5Aiterate2(root, H5_INDEX_NAME, H5_ITER_INC, &idx, load_attr, &c);
    }
    if (rc >= 0 && !c.failed) {
        int n_attrs = b->n_attrs;
        rc = H5Lvisit(root, H5_INDEX_CRT_ORDER, H5_ITER_INC, load_item, &c);
        if (rc < 0 && !c.failed) {
            clear_items(b);
            rc = H5Lvisit(root, H5_INDEX_NAME, H5_ITER_INC, load_item, &c);
        }
        b->n_attrs = n_attrs;
    }
    H5Gclose(root);
    H5Fclose(f);
    if (rc < 0 || c.failed) {
        if (!c.failed) av_err(err, "%s: cannot read the model file (truncated or corrupt?)", path);
        av_blob_free(b);
        return -1;
    }
    return 0;
}
