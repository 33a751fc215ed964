/* Writers of .h5ad files (formats.md 1.10): a new file with obs/var and per-cell outputs,
 * an in-place obsm write, and a streaming CSR writer for the simulator. */
#include "io/output.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/h5util.h"
#include "io/out_h5.h"
#include "io/replace.h"
#include "src/util.h"

struct AvWriter {
    char *path;
    AvReplace r;
    hid_t f;
    int64_t n_obs, n_vars;
};

struct AvCsrWriter {
    char *path;
    AvReplace r;
    hid_t f, x, data, indices;
    int64_t n_vars, n_rows, nnz;
    int gzip;
    int64_t *indptr, indptr_cap; /* kept in memory: its width is known only at the end */
};

/* A new file at a temporary for path, with the root's anndata encoding. */
static hid_t create_file(const char *path, AvReplace *r, char *err) {
    out_h5_quiet();
    if (av_replace_begin(r, path, err)) return -1;
    hid_t f = out_file_create(r->tmp, H5P_DEFAULT);
    if (f < 0) {
        av_err(err, "%s: cannot create the temporary file '%s' (is the folder writable?)", path,
               r->tmp);
        av_replace_abort(r);
        return -1;
    }
    if (out_encoding(f, "anndata", "0.1.0")) {
        av_err(err, "%s: cannot write the root attributes", path);
        out_file_discard(f);
        av_replace_abort(r);
        return -1;
    }
    return f;
}

/* HDF5 opens the name of a new in-memory file once, to look for an open file of that
 * name; this one cannot be opened (a FIFO output opened there would see an early EOF). */
#define MEM_FILE_NAME "/dev/null/atlasvi-in-memory.h5"

/* A new file in memory with the root's anndata encoding. obs and var are built there and
 * written out whole (settle_file): HDF5 1.10's H5Ocopy crashes when the disk fills under
 * it, while a failed write of our own is an error like any other. */
static hid_t create_mem_file(const char *path, char *err) {
    out_h5_quiet();
    hid_t f = out_file_create_mem(MEM_FILE_NAME);
    if (f < 0) {
        av_err(err, "%s: cannot create the file in memory", path);
        return -1;
    }
    if (out_encoding(f, "anndata", "0.1.0")) {
        av_err(err, "%s: cannot write the root attributes", path);
        H5Fclose(f);
        return -1;
    }
    return f;
}

/* Writes the in-memory file mem (closed here) to a temporary for path and opens that. */
static hid_t settle_file(hid_t mem, const char *path, AvReplace *r, char *err) {
    void *image = NULL;
    size_t size = 0;
    if (out_file_image(mem, &image, &size)) {
        av_err(err, "%s: cannot take the image of the file built in memory", path);
        return -1;
    }
    hid_t f = -1;
    if (!av_replace_begin(r, path, err)) {
        if (av_replace_write(r, image, size, err)) {
            av_replace_abort(r);
        } else if ((f = out_file_open_rw(r->tmp)) < 0) {
            av_err(err, "%s: cannot re-open the temporary '%s'", path, r->tmp);
            av_replace_abort(r);
        }
    }
    free(image);
    return f;
}

/* Closes f and puts its temporary into place; removes the temporary on failure. */
static int close_and_commit(hid_t f, const char *path, AvReplace *r, char *err) {
    if (out_file_close(f)) {
        av_replace_abort(r);
        return av_err(err, "%s: writing the file failed (disk full?)", path);
    }
    return av_replace_commit(r, err);
}

/* ---- dataframes ---- */

static int int_width_codes(hid_t loc, const int32_t *codes, int64_t n, int32_t n_cat) {
    hid_t ft = n_cat < 128 ? H5T_STD_I8LE : n_cat < 32768 ? H5T_STD_I16LE : H5T_STD_I32LE;
    return out_array(loc, "codes", H5T_NATIVE_INT32, ft, codes, n, -1);
}

static int write_column(hid_t df, const AvColumn *c, int64_t n, const char *where, char *err) {
    if (c->n != n)
        return av_err(err, "%s: column '%s' has %lld values, expected %lld", where, c->name,
                      (long long)c->n, (long long)n);
    if (c->kind == AV_COL_CATEGORICAL) {
        for (int64_t i = 0; i < n; i++)
            if (c->codes[i] < -1 || c->codes[i] >= c->n_categories)
                return av_err(err, "%s: column '%s' has code %d at row %lld (%d categories)", where,
                              c->name, c->codes[i], (long long)i, c->n_categories);
        hid_t g = H5Gcreate2(df, c->name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        int rc = g < 0 || out_encoding(g, "categorical", "0.2.0") ||
                 out_attr_bool(g, "ordered", 0) ||
                 int_width_codes(g, c->codes, n, c->n_categories) ||
                 out_string_array(g, "categories", c->categories, c->n_categories, NULL);
        if (g >= 0) H5Gclose(g);
        if (rc) return av_err(err, "%s: cannot write column '%s'", where, c->name);
        return 0;
    }
    int rc;
    if (c->kind == AV_COL_NUMERIC)
        rc = out_array(df, c->name, H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, c->values, n, -1);
    else
        rc = out_string_array(df, c->name, c->strings, n, NULL);
    if (rc) return av_err(err, "%s: cannot write column '%s'", where, c->name);
    return 0;
}

static int check_columns(const AvColumn *cols, int n_cols, const char *where, char *err) {
    for (int i = 0; i < n_cols; i++) {
        const char *nm = cols[i].name;
        if (!nm || !*nm || strchr(nm, '/') || !strcmp(nm, "_index") || !strcmp(nm, "."))
            return av_err(err, "%s: invalid obs column name '%s'", where, nm ? nm : "(null)");
        for (int j = 0; j < i; j++)
            if (!strcmp(cols[j].name, nm))
                return av_err(err, "%s: obs column '%s' given twice", where, nm);
    }
    return 0;
}

/* A fresh dataframe: index dataset "_index" (names, or prefix<i> when names is NULL). */
static int write_dataframe(hid_t f, const char *name, char *const *names, int64_t n,
                           const char *prefix, const AvColumn *cols, int n_cols, const char *where,
                           char *err) {
    if (check_columns(cols, n_cols, where, err)) return -1;
    hid_t g = out_group_tracked(f, name);
    if (g < 0) return av_err(err, "%s: cannot create /%s", where, name);
    char **order = av_calloc((size_t)n_cols + 1, sizeof *order);
    for (int i = 0; i < n_cols; i++) order[i] = cols[i].name;
    int rc = 0;
    if (out_encoding(g, "dataframe", "0.2.0") || out_attr_str(g, "_index", "_index") ||
        out_attr_strs(g, "column-order", order, n_cols) ||
        out_string_array(g, "_index", names, n, prefix))
        rc = av_err(err, "%s: cannot write the /%s index", where, name);
    for (int i = 0; i < n_cols && !rc; i++) rc = write_column(g, &cols[i], n, where, err);
    free(order);
    H5Gclose(g);
    return rc;
}

/* Adds (or replaces) columns of an existing dataframe group and extends column-order. */
static int add_columns(hid_t f, const char *name, const AvColumn *cols, int n_cols, int64_t n,
                       const char *where, char *err) {
    if (n_cols == 0) return 0;
    if (check_columns(cols, n_cols, where, err)) return -1;
    hid_t g = H5Gopen2(f, name, H5P_DEFAULT);
    if (g < 0) return av_err(err, "%s: cannot open /%s", where, name);
    int64_t n_old = 0;
    char **old = out_attr_get_strs(g, "column-order", &n_old);
    int rc = n_old < 0 ? av_err(err, "%s: cannot read /%s column-order", where, name) : 0;
    char *idx = out_attr_get_str(g, "_index");
    char **order = av_calloc((size_t)(n_old > 0 ? n_old : 0) + (size_t)n_cols + 1, sizeof *order);
    int64_t n_order = 0;
    for (int64_t i = 0; i < n_old; i++) order[n_order++] = old[i];
    for (int i = 0; i < n_cols && !rc; i++) {
        if (idx && !strcmp(idx, cols[i].name)) {
            rc = av_err(err, "%s: obs column '%s' is the name of the index", where, cols[i].name);
            break;
        }
        if (H5Lexists(g, cols[i].name, H5P_DEFAULT) > 0) H5Ldelete(g, cols[i].name, H5P_DEFAULT);
        rc = write_column(g, &cols[i], n, where, err);
        int seen = 0;
        for (int64_t j = 0; j < n_order; j++) seen |= !strcmp(order[j], cols[i].name);
        if (!seen) order[n_order++] = cols[i].name;
    }
    if (!rc && out_attr_strs(g, "column-order", order, n_order))
        rc = av_err(err, "%s: cannot write /%s column-order (too many columns?)", where, name);
    free(order);
    av_free_strings(old, n_old > 0 ? n_old : 0);
    free(idx);
    H5Gclose(g);
    return rc;
}

/* Length of a dataframe's index (modern, 0.7 or compound dataset); -1 when unknown. */
static int64_t frame_length(hid_t f, const char *name) {
    H5O_info_t info;
    if (H5Lexists(f, name, H5P_DEFAULT) <= 0 ||
        H5Oget_info_by_name(f, name, &info, H5P_DEFAULT) < 0)
        return -1;
    int64_t n = -1;
    if (info.type == H5O_TYPE_DATASET) {
        hid_t d = H5Dopen2(f, name, H5P_DEFAULT), s = H5Dget_space(d);
        n = H5Sget_simple_extent_npoints(s);
        H5Sclose(s);
        H5Dclose(d);
        return n;
    }
    hid_t g = H5Gopen2(f, name, H5P_DEFAULT);
    char *idx = out_attr_get_str(g, "_index");
    if (idx) n = h5u_column_length(g, idx);
    free(idx);
    H5Gclose(g);
    return n;
}

/* A dataframe group written by anndata >= 0.8 (copyable as it is). */
static int modern_frame(hid_t f, const char *name) {
    H5O_info_t info;
    if (H5Lexists(f, name, H5P_DEFAULT) <= 0 ||
        H5Oget_info_by_name(f, name, &info, H5P_DEFAULT) < 0 || info.type != H5O_TYPE_GROUP)
        return 0;
    hid_t g = H5Gopen2(f, name, H5P_DEFAULT);
    char *t = out_attr_get_str(g, "encoding-type"), *v = out_attr_get_str(g, "encoding-version");
    int ok = t && v && !strcmp(t, "dataframe") && !strcmp(v, "0.2.0");
    free(t);
    free(v);
    H5Gclose(g);
    return ok;
}

static int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0) return 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* ---- AvWriter ---- */

AvWriter *av_writer_create_cols(const char *path, const AvInput *in, const AvColumn *cols,
                                int n_cols, char *err) {
    out_h5_quiet();
    if (!in || !in->path) {
        av_err(err, "%s: no source file given for obs/var", path);
        return NULL;
    }
    if (same_file(path, in->path)) {
        av_err(err, "%s: the output is the input file; write obsm in place instead", path);
        return NULL;
    }
    AvWriter *w = av_calloc(1, sizeof *w);
    w->path = av_strdup(path);
    w->n_obs = in->n_obs;
    w->n_vars = in->n_vars;
    hid_t src = -1;
    int copied = 0;
    const char *var_src =
        in->matrix_name && !strncmp(in->matrix_name, "raw", 3) ? "raw/var" : "var";
    if (in->format == AV_FMT_H5AD) {
        src = H5Fopen(in->path, H5F_ACC_RDONLY, H5P_DEFAULT);
        if (src < 0) {
            av_err(err, "%s: cannot open as HDF5 to copy obs/var", in->path);
            goto fail;
        }
        copied = modern_frame(src, "obs") && modern_frame(src, var_src) &&
                 frame_length(src, "obs") == in->n_obs && frame_length(src, var_src) == in->n_vars;
    }
    w->f = create_mem_file(path, err);
    if (w->f < 0) goto fail;
    if (copied) {
        if (H5Ocopy(src, "obs", w->f, "obs", H5P_DEFAULT, H5P_DEFAULT) < 0 ||
            H5Ocopy(src, var_src, w->f, "var", H5P_DEFAULT, H5P_DEFAULT) < 0) {
            av_err(err, "%s: cannot copy obs/var from %s", path, in->path);
            goto fail_file;
        }
        if (add_columns(w->f, "obs", cols, n_cols, w->n_obs, path, err)) goto fail_file;
    } else {
        if (!in->obs_names || !in->var_names) {
            av_err(err, "%s: obs/var names of %s were not read", path, in->path);
            goto fail_file;
        }
        if (write_dataframe(w->f, "obs", in->obs_names, in->n_obs, NULL, cols, n_cols, path, err) ||
            write_dataframe(w->f, "var", in->var_names, in->n_vars, NULL, NULL, 0, path, err))
            goto fail_file;
    }
    if (src >= 0) H5Fclose(src);
    src = -1;
    w->f = settle_file(w->f, path, &w->r, err);
    if (w->f < 0) goto fail;
    return w;
fail_file:
    H5Fclose(w->f);
fail:
    if (src >= 0) H5Fclose(src);
    free(w->path);
    free(w);
    return NULL;
}

AvWriter *av_writer_create(const char *path, const AvInput *in, char *err) {
    return av_writer_create_cols(path, in, NULL, 0, err);
}

int av_key_ok(const char *key) {
    return key && *key && !strchr(key, '/') && key[0] != '.';
}

static int check_key(const char *path, const char *what, const char *key, char *err) {
    if (!av_key_ok(key))
        return av_err(err, "%s: invalid %s key '%s' (no '/', not starting with '.')", path, what,
                      key ? key : "(null)");
    return 0;
}

static int write_matrix(hid_t f, const char *dict, const char *key, const float *data, int64_t n,
                        int64_t k, const char *path, char *err) {
    hid_t g = out_dict_group(f, dict);
    if (g < 0) return av_err(err, "%s: cannot create /%s", path, dict);
    if (H5Lexists(g, key, H5P_DEFAULT) > 0) H5Ldelete(g, key, H5P_DEFAULT);
    int rc = out_array(g, key, H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, data, n, k);
    H5Gclose(g);
    if (rc) return av_err(err, "%s: cannot write /%s/%s (disk full?)", path, dict, key);
    return 0;
}

int av_writer_obsm(AvWriter *w, const char *key, const float *data, int64_t n, int64_t k,
                   char *err) {
    if (check_key(w->path, "obsm", key, err)) return -1;
    if (n != w->n_obs || k < 0)
        return av_err(err, "%s: obsm '%s' has %lld rows, the file has %lld cells", w->path, key,
                      (long long)n, (long long)w->n_obs);
    return write_matrix(w->f, "obsm", key, data, n, k, w->path, err);
}

int av_writer_layer(AvWriter *w, const char *name, const float *data, int64_t n, int64_t g,
                    char *err) {
    if (check_key(w->path, "layer", name, err)) return -1;
    if (n != w->n_obs || g != w->n_vars)
        return av_err(err, "%s: layer '%s' is %lld x %lld, the file has %lld x %lld", w->path, name,
                      (long long)n, (long long)g, (long long)w->n_obs, (long long)w->n_vars);
    return write_matrix(w->f, "layers", name, data, n, g, w->path, err);
}

static void writer_free(AvWriter *w) {
    free(w->path);
    free(w);
}

int av_writer_commit(AvWriter *w, char *err) {
    int rc = close_and_commit(w->f, w->path, &w->r, err);
    writer_free(w);
    return rc;
}

void av_writer_abort(AvWriter *w) {
    if (!w) return;
    out_file_discard(w->f);
    av_replace_abort(&w->r);
    writer_free(w);
}

/* ---- in-place obsm ---- */

static int verify_obsm(const char *path, const char *key, int64_t n, int64_t k, char *err) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return av_err(err, "%s: cannot re-open after writing obsm/%s", path, key);
    char name[AV_ERRLEN];
    snprintf(name, sizeof name, "obsm/%s", key);
    int ok = 0;
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d >= 0) {
        hid_t s = H5Dget_space(d), t = H5Dget_type(d);
        hsize_t dims[2] = {0, 0};
        char *enc = out_attr_get_str(d, "encoding-type");
        ok = H5Sget_simple_extent_ndims(s) == 2 && H5Sget_simple_extent_dims(s, dims, NULL) == 2 &&
             dims[0] == (hsize_t)n && dims[1] == (hsize_t)k && H5Tget_class(t) == H5T_FLOAT &&
             H5Tget_size(t) == 4 && enc && !strcmp(enc, "array");
        free(enc);
        H5Tclose(t);
        H5Sclose(s);
        H5Dclose(d);
    }
    H5Fclose(f);
    if (!ok)
        return av_err(err, "%s: obsm/%s did not read back as %lld x %lld float32", path, key,
                      (long long)n, (long long)k);
    return 0;
}

int av_write_obsm_inplace(const char *path, const char *key, const float *data, int64_t n,
                          int64_t k, char *err) {
    out_h5_quiet();
    if (check_key(path, "obsm", key, err)) return -1;
    if (k < 0) return av_err(err, "%s: obsm '%s' has %lld columns", path, key, (long long)k);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) {
        if (access(path, F_OK) != 0) return av_err(err, "%s: no such file", path);
        if (H5Fis_hdf5(path) <= 0) return av_err(err, "%s: not an HDF5 (.h5ad) file", path);
        return av_err(err,
                      "%s: cannot open for writing (read-only, or open in another program: "
                      "HDF5 file locking)",
                      path);
    }
    int64_t n_obs = frame_length(f, "obs");
    if (n_obs != n) {
        H5Fclose(f);
        if (n_obs < 0) return av_err(err, "%s: no readable /obs index", path);
        return av_err(err, "%s: obsm '%s' has %lld rows, the file has %lld cells", path, key,
                      (long long)n, (long long)n_obs);
    }
    size_t kl = strlen(key);
    char *tmp = av_malloc(kl + 6);
    snprintf(tmp, kl + 6, ".%s.tmp", key);
    int rc = 0;
    hid_t g = out_dict_group(f, "obsm");
    if (g < 0) {
        rc = av_err(err, "%s: cannot open or create /obsm", path);
    } else {
        if (H5Lexists(g, tmp, H5P_DEFAULT) > 0) H5Ldelete(g, tmp, H5P_DEFAULT);
        if (out_array(g, tmp, H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, data, n, k)) {
            rc = av_err(err, "%s: cannot write obsm/%s (disk full?)", path, key);
            H5Ldelete(g, tmp, H5P_DEFAULT);
        } else {
            if (H5Lexists(g, key, H5P_DEFAULT) > 0 && H5Ldelete(g, key, H5P_DEFAULT) < 0)
                rc = av_err(err, "%s: cannot replace obsm/%s", path, key);
            if (!rc && H5Lmove(g, tmp, g, key, H5P_DEFAULT, H5P_DEFAULT) < 0)
                rc = av_err(err, "%s: cannot move obsm/%s into place", path, key);
        }
        H5Gclose(g);
    }
    free(tmp);
    if (out_file_close(f) && !rc)
        rc = av_err(err, "%s: closing after writing obsm/%s failed (disk full?)", path, key);
    if (rc) return rc;
    return verify_obsm(path, key, n, k, err);
}

/* ---- streaming CSR writer ---- */

static hid_t extendible(hid_t loc, const char *name, hid_t type, hsize_t chunk, int gzip) {
    hsize_t dim = 0, maxdim = H5S_UNLIMITED;
    hid_t s = H5Screate_simple(1, &dim, &maxdim);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &chunk);
    if (gzip > 0) H5Pset_deflate(dcpl, (unsigned)gzip);
    hid_t d = H5Dcreate2(loc, name, type, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(s);
    if (d >= 0 && out_encoding(d, "array", "0.2.0")) {
        H5Dclose(d);
        return -1;
    }
    return d;
}

/* Appends n values to a 1-D extendible dataset holding `have` values. */
static int append(hid_t d, hid_t mem_type, const void *buf, int64_t have, int64_t n) {
    if (n == 0) return 0;
    hsize_t size = (hsize_t)(have + n), start = (hsize_t)have, count = (hsize_t)n;
    if (H5Dset_extent(d, &size) < 0) return -1;
    hid_t fs = H5Dget_space(d), ms = H5Screate_simple(1, &count, NULL);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL);
    herr_t rc = H5Dwrite(d, mem_type, ms, fs, H5P_DEFAULT, buf);
    H5Sclose(ms);
    H5Sclose(fs);
    return rc < 0 ? -1 : 0;
}

static void csr_close(AvCsrWriter *w) {
    if (w->data >= 0) H5Dclose(w->data);
    if (w->indices >= 0) H5Dclose(w->indices);
    if (w->x >= 0) H5Gclose(w->x);
    w->data = w->indices = w->x = -1;
}

static void csr_free(AvCsrWriter *w) {
    free(w->path);
    free(w->indptr);
    free(w);
}

void av_csr_writer_abort(AvCsrWriter *w) {
    if (!w) return;
    csr_close(w);
    if (w->f >= 0) out_file_discard(w->f);
    av_replace_abort(&w->r);
    csr_free(w);
}

AvCsrWriter *av_csr_writer_create_opts(const char *path, int64_t n_vars, char **var_names,
                                       int gzip_level, char *err) {
    if (n_vars < 0 || n_vars > INT32_MAX) {
        av_err(err, "%s: cannot write %lld genes", path, (long long)n_vars);
        return NULL;
    }
    AvCsrWriter *w = av_calloc(1, sizeof *w);
    w->path = av_strdup(path);
    w->n_vars = n_vars;
    w->x = w->data = w->indices = -1;
    w->indptr_cap = 1 << 16;
    w->indptr = av_malloc((size_t)w->indptr_cap * sizeof *w->indptr);
    w->indptr[0] = 0;
    w->f = create_file(path, &w->r, err);
    if (w->f < 0) {
        csr_free(w);
        return NULL;
    }
    if (write_dataframe(w->f, "var", var_names, n_vars, "gene_", NULL, 0, path, err)) goto fail;
    w->x = H5Gcreate2(w->f, "X", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (w->x < 0 || out_encoding(w->x, "csr_matrix", "0.1.0")) goto fail_x;
    w->data = extendible(w->x, "data", H5T_IEEE_F32LE, 1 << 18, gzip_level);
    w->indices = extendible(w->x, "indices", H5T_STD_I32LE, 1 << 18, gzip_level);
    w->gzip = gzip_level;
    if (w->data < 0 || w->indices < 0) goto fail_x;
    return w;
fail_x:
    av_err(err, "%s: cannot create /X", path);
fail:
    av_csr_writer_abort(w);
    return NULL;
}

AvCsrWriter *av_csr_writer_create(const char *path, int64_t n_vars, char **var_names, char *err) {
    return av_csr_writer_create_opts(path, n_vars, var_names, 1, err);
}

int av_csr_writer_append(AvCsrWriter *w, const AvCsr *rows, char *err) {
    if (rows->n_rows == 0) return 0;
    if (rows->n_cols != w->n_vars)
        return av_err(err, "%s: appended rows have %lld columns, expected %lld", w->path,
                      (long long)rows->n_cols, (long long)w->n_vars);
    if (rows->indptr[0] != 0)
        return av_err(err, "%s: appended rows must start at indptr 0", w->path);
    for (int64_t r = 0; r < rows->n_rows; r++) {
        int64_t lo = rows->indptr[r], hi = rows->indptr[r + 1];
        if (hi < lo)
            return av_err(err, "%s: indptr decreases at appended row %lld", w->path, (long long)r);
        for (int64_t j = lo; j < hi; j++)
            if (rows->indices[j] < 0 || rows->indices[j] >= w->n_vars ||
                (j > lo && rows->indices[j] <= rows->indices[j - 1]))
                return av_err(err, "%s: bad or unsorted column index %d in appended row %lld",
                              w->path, rows->indices[j], (long long)r);
    }
    int64_t nnz = rows->indptr[rows->n_rows];
    if (append(w->data, H5T_NATIVE_FLOAT, rows->data, w->nnz, nnz) ||
        append(w->indices, H5T_NATIVE_INT32, rows->indices, w->nnz, nnz))
        return av_err(err, "%s: writing rows failed (disk full?)", w->path);
    if (w->n_rows + rows->n_rows + 1 > w->indptr_cap) {
        while (w->n_rows + rows->n_rows + 1 > w->indptr_cap) w->indptr_cap *= 2;
        w->indptr = av_realloc(w->indptr, (size_t)w->indptr_cap * sizeof *w->indptr);
    }
    for (int64_t r = 0; r < rows->n_rows; r++)
        w->indptr[w->n_rows + 1 + r] = rows->indptr[r + 1] + w->nnz;
    w->nnz += nnz;
    w->n_rows += rows->n_rows;
    return 0;
}

/* indptr as scipy would hold it: int32 while the non-zeros fit, as the int32 indices do.
 * A mixed pair (int64 indptr, int32 indices) is valid h5ad, but scipy then casts the whole
 * indices array to int64 on every row selection, which makes Python loaders that index
 * minibatches (scvi-tools' AnnDataLoader) O(nnz) per minibatch. */
static int write_indptr(AvCsrWriter *w) {
    hid_t ft = w->nnz <= INT32_MAX ? H5T_STD_I32LE : H5T_STD_I64LE;
    hid_t d = extendible(w->x, "indptr", ft, 1 << 16, w->gzip);
    if (d < 0) return -1;
    int rc = append(d, H5T_NATIVE_INT64, w->indptr, 0, w->n_rows + 1);
    return H5Dclose(d) < 0 || rc ? -1 : 0;
}

int av_csr_writer_finish(AvCsrWriter *w, char **obs_names, const AvColumn *cols, int n_cols,
                         char *err) {
    int64_t shape[2] = {w->n_rows, w->n_vars};
    int rc = 0;
    if (write_indptr(w)) rc = av_err(err, "%s: cannot write /X/indptr (disk full?)", w->path);
    if (!rc && out_attr_i64s(w->x, "shape", shape, 2))
        rc = av_err(err, "%s: cannot write /X shape", w->path);
    if (!rc)
        rc =
            write_dataframe(w->f, "obs", obs_names, w->n_rows, "cell_", cols, n_cols, w->path, err);
    csr_close(w);
    if (rc) {
        av_csr_writer_abort(w);
        return rc;
    }
    rc = close_and_commit(w->f, w->path, &w->r, err);
    csr_free(w);
    return rc;
}

int64_t av_csr_writer_rows(const AvCsrWriter *w) {
    return w->n_rows;
}
int64_t av_csr_writer_nnz(const AvCsrWriter *w) {
    return w->nnz;
}
