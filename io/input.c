/* Input readers: format detection, .h5ad, 10x HDF5 (v3 and v2), loom; shared row
 * reading for CSR, CSC, dense and transposed dense storage. Matrix Market is in mtx.c. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "io/h5util.h"
#include "io/input.h"
#include "io/input_impl.h"
#include "src/util.h"

#define BLOCK_ELEMS ((int64_t)1 << 22) /* values per read when scanning */

/* Shapes a file may declare (any shape fits in a few bytes: a chunked dataset with no chunk
 * written, a `shape` attribute): cells up to 2^40, features up to INT32_MAX (column indices
 * are int32). Beyond that, n + 1 and n_obs * n_vars would overflow. */
#define MAX_CELLS ((int64_t)1 << 40)
static int bad_shape(int64_t n_obs, int64_t n_vars) {
    return n_obs < 0 || n_vars < 0 || n_obs > MAX_CELLS || n_vars > INT32_MAX;
}
static int shape_err(AvInput *in, const char *what, int64_t n_obs, int64_t n_vars, char *err) {
    return av_err(err,
                  "%s: /%s: shape %lld cells x %lld features is negative or too large (at most "
                  "2^40 x 2^31-1)",
                  in->path, what, (long long)n_obs, (long long)n_vars);
}

const char *av_format_name(AvFormat f) {
    switch (f) {
    case AV_FMT_H5AD:
        return "h5ad";
    case AV_FMT_10X_H5:
        return "10x-h5";
    case AV_FMT_MTX_DIR:
        return "mtx";
    case AV_FMT_LOOM:
        return "loom";
    }
    return "?";
}

/* ---------------------------------------------------------------- small helpers */

static void list_join(char *buf, size_t len, char **items, int64_t n) {
    size_t used = 0;
    buf[0] = '\0';
    if (n == 0) {
        snprintf(buf, len, "(none)");
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        int w = snprintf(buf + used, len - used, "%s%s", i ? ", " : "", items[i]);
        if (w < 0 || used + (size_t)w >= len - 8) {
            snprintf(buf + used, len - used, ", ...");
            return;
        }
        used += (size_t)w;
    }
}

static void push_string(char ***arr, int *n, const char *s) {
    *arr = av_realloc(*arr, (size_t)(*n + 1) * sizeof(char *));
    (*arr)[(*n)++] = av_strdup(s);
}

static hid_t open_dset(AvInput *in, const char *path, char *err, int *rc) {
    if (*rc) return -1;
    if (!h5u_is_dataset(in->impl->file, path)) {
        *rc = av_err(err, "%s: dataset /%s not found (expected it for a %s matrix)", in->path, path,
                     av_format_name(in->format));
        return -1;
    }
    hid_t d = H5Dopen2(in->impl->file, path, H5P_DEFAULT);
    if (d < 0) {
        *rc = av_err(err, "%s: cannot open dataset /%s (%s)", in->path, path, h5u_last_error());
        return -1;
    }
    if (h5u_check_filters(d, in->path, path, err)) {
        *rc = -1;
        H5Dclose(d);
        return -1;
    }
    return d;
}

static int64_t dset_len(hid_t d) {
    int64_t dims[2];
    int r = h5u_dims(d, dims);
    return r == 1 ? dims[0] : -1;
}

/* Names of the children of a group (links), optionally only datasets. */
typedef struct {
    char **names;
    int n;
} NameList;

static herr_t collect_cb(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    (void)g;
    (void)info;
    NameList *l = data;
    push_string(&l->names, &l->n, name);
    return 0;
}

static NameList children(hid_t loc, const char *grp) {
    NameList l = {NULL, 0};
    if (!h5u_is_group(loc, grp)) return l;
    hid_t g = H5Gopen2(loc, grp, H5P_DEFAULT);
    if (g < 0) return l;
    hsize_t idx = 0;
    H5Literate(g, H5_INDEX_NAME, H5_ITER_NATIVE, &idx, collect_cb, &l);
    H5Gclose(g);
    return l;
}

static char *join_path(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = av_malloc(n);
    snprintf(s, n, "%s/%s", a, b);
    return s;
}

/* The object holding a dataframe's index (a dataset of strings, or a nullable-string-array
 * or categorical group): the one the `_index` attribute names (whether or not it exists,
 * so that a broken index is an error, not numbered names), else "_index" or "index". */
static char *dataframe_index(hid_t file, const char *grp) {
    hid_t g = H5Gopen2(file, grp, H5P_DEFAULT);
    if (g < 0) return NULL;
    char *name = h5u_attr_string(g, "_index");
    H5Gclose(g);
    if (name) {
        char *path = join_path(grp, name);
        free(name);
        return path;
    }
    static const char *tries[] = {"_index", "index"};
    for (int i = 0; i < 2; i++) {
        char *path = join_path(grp, tries[i]);
        if (h5u_exists(file, path)) return path;
        free(path);
    }
    return NULL;
}

/* Columns of a dataframe group: `column-order`, else every child but the index and
 * `__categories`. */
static void dataframe_columns(hid_t file, const char *grp, const char *index_path, int *n,
                              char ***out) {
    *n = 0;
    *out = NULL;
    hid_t g = H5Gopen2(file, grp, H5P_DEFAULT);
    if (g < 0) return;
    int64_t nc = 0;
    char **cols = NULL;
    if (h5u_attr_strings(g, "column-order", &nc, &cols) == 0) {
        for (int64_t i = 0; i < nc; i++) push_string(out, n, cols[i]);
        av_free_strings(cols, nc);
    } else {
        NameList l = children(file, grp);
        const char *idx = index_path ? strrchr(index_path, '/') + 1 : "";
        for (int i = 0; i < l.n; i++)
            if (strcmp(l.names[i], idx) && strcmp(l.names[i], "__categories"))
                push_string(out, n, l.names[i]);
        av_free_strings(l.names, l.n);
    }
    H5Gclose(g);
}

/* loom attribute groups: 1-D or (n, 1) datasets of length n, except the names dataset. */
static void attr_columns(hid_t file, const char *grp, const char *skip, int64_t n, int *nout,
                         char ***out) {
    *nout = 0;
    *out = NULL;
    NameList l = children(file, grp);
    for (int i = 0; i < l.n; i++) {
        if (skip && !strcmp(l.names[i], skip)) continue;
        char *p = join_path(grp, l.names[i]);
        if (h5u_is_dataset(file, p)) {
            hid_t d = H5Dopen2(file, p, H5P_DEFAULT);
            int64_t dims[2];
            int r = h5u_dims(d, dims);
            if ((r == 1 && dims[0] == n) || (r == 2 && dims[0] == n && dims[1] == 1))
                push_string(out, nout, l.names[i]);
            H5Dclose(d);
        }
        free(p);
    }
    av_free_strings(l.names, l.n);
}

/* ---------------------------------------------------------------- h5ad */

/* obs and var dataframes; their lengths must match the matrix (or, without a matrix,
 * give the shape). */
static int open_h5ad_frames(AvInput *in, hid_t f, const char *var_grp, char *err) {
    AvInputImpl *m = in->impl;
    const char *mp = in->matrix_name ? in->matrix_name : "X";
    /* obs and var dataframes. */
    if (h5u_is_group(f, "obs")) {
        m->obs_grp = av_strdup("obs");
        m->obs_index = dataframe_index(f, "obs");
        dataframe_columns(f, "obs", m->obs_index, &in->n_obs_columns, &in->obs_columns);
    }
    if (h5u_is_group(f, var_grp)) {
        m->var_grp = av_strdup(var_grp);
        m->var_index = dataframe_index(f, var_grp);
        dataframe_columns(f, var_grp, m->var_index, &m->n_var_columns, &m->var_columns);
    }
    const char *what[2] = {m->obs_index, m->var_index};
    const char *grp[2] = {m->obs_grp, m->var_grp};
    int64_t want[2] = {in->n_obs, in->n_vars};
    for (int k = 0; k < 2; k++) {
        if (!what[k] && grp[k])
            return av_err(err, "%s: /%s has no index (no '_index' attribute, '_index' or 'index')",
                          in->path, grp[k]);
        if (!what[k]) continue;
        int64_t len = h5u_column_length(f, what[k]);
        if (len < 0)
            return av_err(err,
                          "%s: /%s: the %s index is missing or unreadable (expected strings, a "
                          "nullable-string-array or a categorical)",
                          in->path, what[k], k ? "var" : "obs");
        if (m->st == AV_ST_NONE) {
            if (k)
                in->n_vars = len;
            else
                in->n_obs = len;
            continue;
        }
        if (len != want[k])
            return av_err(err, "%s: /%s has %lld names but /%s has %lld %s", in->path, what[k],
                          (long long)len, mp, (long long)want[k], k ? "columns" : "rows");
    }
    return 0;
}

static int open_h5ad(AvInput *in, const char *layer, char *err) {
    AvInputImpl *m = in->impl;
    hid_t f = m->file;
    /* Layers present, for messages and info. */
    NameList ll = children(f, "layers");
    for (int i = 0; i < ll.n; i++) {
        char *p = join_path("layers", ll.names[i]);
        if (h5u_exists(f, p)) push_string(&m->layers, &m->n_layers, ll.names[i]);
        free(p);
    }
    av_free_strings(ll.names, ll.n);
    if (h5u_exists(f, "raw/X")) push_string(&m->layers, &m->n_layers, "raw");
    char avail[400];
    list_join(avail, sizeof avail, m->layers, m->n_layers);

    const char *var_grp = "var";
    if (!layer || !strcmp(layer, "X")) {
        if (!h5u_exists(f, "X") && h5u_is_group(f, "mod")) {
            NameList mods = children(f, "mod");
            char mlist[400];
            list_join(mlist, sizeof mlist, mods.names, mods.n);
            av_free_strings(mods.names, mods.n);
            return av_err(err,
                          "%s: a MuData .h5mu file (modalities under /mod: %s); reading a "
                          "modality is not supported yet",
                          in->path, mlist);
        }
        if (!h5u_exists(f, "X")) {
            /* metadata-only: obs, var and info work; reading counts gives this error */
            char msg[AV_ERRLEN];
            snprintf(msg, sizeof msg,
                     "%s: no /X matrix; layers present: %s (choose one with --layer)", in->path,
                     avail);
            m->no_matrix = av_strdup(msg);
            m->st = AV_ST_NONE;
            return open_h5ad_frames(in, f, var_grp, err);
        }
        in->matrix_name = av_strdup("X");
    } else if (!strcmp(layer, "raw")) {
        if (!h5u_exists(f, "raw/X"))
            return av_err(err, "%s: layer 'raw' needs /raw/X, which is missing; layers present: %s",
                          in->path, avail);
        in->matrix_name = av_strdup("raw/X");
        var_grp = "raw/var";
    } else {
        in->matrix_name = join_path("layers", layer);
        if (!h5u_exists(f, in->matrix_name))
            return av_err(err, "%s: layer '%s' not found (no dataset /%s); layers present: %s",
                          in->path, layer, in->matrix_name, avail);
    }
    const char *mp = in->matrix_name;
    m->mpath = av_strdup(mp);
    int rc = 0;
    if (h5u_is_group(f, mp)) {
        hid_t g = H5Gopen2(f, mp, H5P_DEFAULT);
        char *enc = h5u_attr_string(g, "encoding-type");
        char *legacy = enc ? NULL : h5u_attr_string(g, "h5sparse_format");
        int64_t shape[2] = {-1, -1};
        int ns = h5u_attr_ints(g, "shape", shape, 2);
        if (ns != 2) ns = h5u_attr_ints(g, "h5sparse_shape", shape, 2);
        H5Gclose(g);
        int csr = (enc && !strcmp(enc, "csr_matrix")) || (legacy && !strcmp(legacy, "csr"));
        int csc = (enc && !strcmp(enc, "csc_matrix")) || (legacy && !strcmp(legacy, "csc"));
        if (!csr && !csc)
            rc = av_err(err,
                        "%s: /%s is a group with encoding-type '%s'; expected csr_matrix or "
                        "csc_matrix",
                        in->path, mp, enc ? enc : (legacy ? legacy : "none"));
        else if (ns != 2 || shape[0] < 0 || shape[1] < 0)
            rc = av_err(err, "%s: /%s: missing or bad 'shape' attribute (expected 2 integers)",
                        in->path, mp);
        else if (bad_shape(shape[0], shape[1]))
            rc = shape_err(in, mp, shape[0], shape[1], err);
        free(enc);
        free(legacy);
        if (rc) return rc;
        char *pd = join_path(mp, "data"), *pi = join_path(mp, "indices"),
             *pp = join_path(mp, "indptr");
        m->d_data = open_dset(in, pd, err, &rc);
        m->d_indices = open_dset(in, pi, err, &rc);
        m->d_indptr = open_dset(in, pp, err, &rc);
        if (!rc) {
            in->n_obs = shape[0];
            in->n_vars = shape[1];
            int64_t nd = dset_len(m->d_data), ni = dset_len(m->d_indices),
                    np = dset_len(m->d_indptr);
            int64_t want = (csr ? shape[0] : shape[1]) + 1;
            if (nd < 0 || nd != ni)
                rc =
                    av_err(err, "%s: /%s and /%s must be 1-D of equal length (found %lld and %lld)",
                           in->path, pd, pi, (long long)nd, (long long)ni);
            else if (np != want)
                rc = av_err(err, "%s: /%s has %lld entries; expected %lld (shape %lld x %lld, %s)",
                            in->path, pp, (long long)np, (long long)want, (long long)shape[0],
                            (long long)shape[1], csr ? "csr" : "csc");
            m->nnz_stored = nd;
            m->st = csr ? AV_ST_CSR : AV_ST_CSC;
            m->n_file_cols = shape[1];
            m->n_major = shape[1];
            if (!rc) h5u_type_name(m->d_data, m->dtype, sizeof m->dtype);
        }
        free(pd);
        free(pi);
        free(pp);
        if (rc) return rc;
    } else {
        m->d_dense = open_dset(in, mp, err, &rc);
        if (rc) return rc;
        int64_t dims[2];
        if (h5u_dims(m->d_dense, dims) != 2)
            return av_err(err, "%s: /%s: expected a 2-D dense matrix or a sparse group", in->path,
                          mp);
        hid_t t = H5Dget_type(m->d_dense);
        H5T_class_t c = H5Tget_class(t);
        H5Tclose(t);
        if (c != H5T_INTEGER && c != H5T_FLOAT)
            return av_err(err, "%s: /%s: expected a numeric matrix", in->path, mp);
        if (bad_shape(dims[0], dims[1])) return shape_err(in, mp, dims[0], dims[1], err);
        in->n_obs = dims[0];
        in->n_vars = dims[1];
        m->st = AV_ST_DENSE;
        m->nnz_stored = dims[0] * dims[1];
        h5u_type_name(m->d_dense, m->dtype, sizeof m->dtype);
    }

    return open_h5ad_frames(in, f, var_grp, err);
}

/* ---------------------------------------------------------------- 10x HDF5 */

static int read_str_dset(AvInput *in, const char *path, int64_t want, char ***out, char *err) {
    hid_t d = H5Dopen2(in->impl->file, path, H5P_DEFAULT);
    int64_t n = 0;
    if (d < 0 || h5u_read_strings(d, &n, out)) {
        if (d >= 0) H5Dclose(d);
        return av_err(err, "%s: /%s: expected %lld strings (%s)", in->path, path, (long long)want,
                      h5u_last_error());
    }
    H5Dclose(d);
    if (want >= 0 && n != want) {
        av_free_strings(*out, n);
        *out = NULL;
        return av_err(err, "%s: /%s has %lld entries; expected %lld", in->path, path, (long long)n,
                      (long long)want);
    }
    return 0;
}

static herr_t v2_cb(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    (void)info;
    NameList *l = data;
    static const char *need[] = {"barcodes", "data", "indices", "indptr"};
    for (int i = 0; i < 4; i++) {
        char p[512];
        snprintf(p, sizeof p, "%s/%s", name, need[i]);
        if (!h5u_is_dataset(g, p)) return 0;
    }
    push_string(&l->names, &l->n, name);
    return 0;
}

static NameList tenx_v2_genomes(hid_t f) {
    NameList l = {NULL, 0};
    hsize_t idx = 0;
    H5Literate(f, H5_INDEX_NAME, H5_ITER_NATIVE, &idx, v2_cb, &l);
    return l;
}

static int open_10x(AvInput *in, const char *layer, int v3, char *err) {
    AvInputImpl *m = in->impl;
    hid_t f = m->file;
    int rc = 0;
    const char *want_type = "Gene Expression";
    if (v3) {
        m->tenx_grp = av_strdup("matrix");
        if (layer) want_type = layer;
    } else {
        NameList g = tenx_v2_genomes(f);
        char avail[400];
        list_join(avail, sizeof avail, g.names, g.n);
        if (layer) {
            for (int i = 0; i < g.n && !m->tenx_grp; i++)
                if (!strcmp(g.names[i], layer)) m->tenx_grp = av_strdup(layer);
            if (!m->tenx_grp)
                rc = av_err(err, "%s: 10x v2 file has no genome '%s'; genomes present: %s",
                            in->path, layer, avail);
        } else if (g.n != 1) {
            rc = av_err(err, "%s: 10x v2 file holds %d genomes (%s); pick one with --layer GENOME",
                        in->path, g.n, avail);
        } else {
            m->tenx_grp = av_strdup(g.names[0]);
        }
        for (int i = 0; i < g.n; i++) push_string(&m->layers, &m->n_layers, g.names[i]);
        av_free_strings(g.names, g.n);
        if (rc) return rc;
    }
    const char *G = m->tenx_grp;
    in->matrix_name = av_strdup(G);
    m->mpath = av_strdup(G);
    char *p;
    p = join_path(G, "data");
    m->d_data = open_dset(in, p, err, &rc);
    free(p);
    p = join_path(G, "indices");
    m->d_indices = open_dset(in, p, err, &rc);
    free(p);
    p = join_path(G, "indptr");
    m->d_indptr = open_dset(in, p, err, &rc);
    free(p);
    if (rc) return rc;
    int64_t shape[2] = {-1, -1};
    p = join_path(G, "shape");
    hid_t ds = h5u_is_dataset(f, p) ? H5Dopen2(f, p, H5P_DEFAULT) : -1;
    if (ds < 0 || dset_len(ds) != 2 ||
        H5Dread(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, shape) < 0 || shape[0] < 0 ||
        shape[1] < 0)
        rc = av_err(err, "%s: /%s: expected 2 integers (n_features, n_barcodes)", in->path, p);
    if (ds >= 0) H5Dclose(ds);
    free(p);
    if (rc) return rc;
    int64_t nf = shape[0], nb = shape[1];
    if (bad_shape(nb, nf)) return shape_err(in, G, nb, nf, err);
    int64_t nd = dset_len(m->d_data), ni = dset_len(m->d_indices), np = dset_len(m->d_indptr);
    if (nd < 0 || nd != ni)
        return av_err(err, "%s: /%s/data and /%s/indices differ in length", in->path, G, G);
    if (np != nb + 1)
        return av_err(err, "%s: /%s/indptr has %lld entries; expected n_barcodes + 1 = %lld",
                      in->path, G, (long long)np, (long long)(nb + 1));
    m->st = AV_ST_CSR;
    m->nnz_stored = nd;
    m->n_file_cols = nf;
    in->n_obs = nb;
    h5u_type_name(m->d_data, m->dtype, sizeof m->dtype);

    /* Features. */
    char **ids = NULL, **names = NULL, **types = NULL, **genome = NULL;
    const char *fg = v3 ? "features" : NULL;
    char path_ids[512], path_names[512], path_types[512], path_genome[512];
    if (v3 && h5u_is_group(f, "matrix/features")) {
        snprintf(path_ids, sizeof path_ids, "%s/%s/id", G, fg);
        snprintf(path_names, sizeof path_names, "%s/%s/name", G, fg);
        snprintf(path_types, sizeof path_types, "%s/%s/feature_type", G, fg);
        snprintf(path_genome, sizeof path_genome, "%s/%s/genome", G, fg);
    } else {
        snprintf(path_ids, sizeof path_ids, "%s/genes", G);
        snprintf(path_names, sizeof path_names, "%s/gene_names", G);
        path_types[0] = '\0';
        snprintf(path_genome, sizeof path_genome, "%s/genome", G);
    }
    if (read_str_dset(in, path_ids, nf, &ids, err)) return -1;
    if (h5u_is_dataset(f, path_names)) {
        if (read_str_dset(in, path_names, nf, &names, err)) rc = -1;
    } else {
        names = av_calloc((size_t)(nf ? nf : 1), sizeof *names);
        for (int64_t i = 0; i < nf; i++) names[i] = av_strdup(ids[i]);
    }
    if (!rc && path_types[0] && h5u_is_dataset(f, path_types))
        rc = read_str_dset(in, path_types, nf, &types, err);
    if (!rc && h5u_is_dataset(f, path_genome)) {
        hid_t d = H5Dopen2(f, path_genome, H5P_DEFAULT);
        if (dset_len(d) == nf) rc = read_str_dset(in, path_genome, nf, &genome, err);
        H5Dclose(d);
    }
    if (!types) {
        m->untyped_features = 1;
        types = av_calloc((size_t)(nf ? nf : 1), sizeof *types);
        for (int64_t i = 0; i < nf; i++) types[i] = av_strdup("Gene Expression");
    }
    /* Feature types present (as selectable "layers" for v3). */
    if (!rc && v3)
        for (int64_t i = 0; i < nf; i++) {
            int seen = 0;
            for (int k = 0; k < m->n_layers && !seen; k++) seen = !strcmp(m->layers[k], types[i]);
            if (!seen) push_string(&m->layers, &m->n_layers, types[i]);
        }
    int keep_all = !strcmp(want_type, "all") || !v3;
    int64_t kept = 0;
    if (!rc) {
        m->col_map = av_malloc((size_t)(nf ? nf : 1) * sizeof(int32_t));
        for (int64_t i = 0; i < nf; i++)
            m->col_map[i] = (keep_all || !strcmp(types[i], want_type)) ? (int32_t)kept++ : -1;
        if (kept == 0 && nf > 0) {
            char avail[400];
            list_join(avail, sizeof avail, m->layers, m->n_layers);
            rc = av_err(err,
                        "%s: no features of type '%s' in /%s/features/feature_type; types "
                        "present: %s (select with --layer TYPE, or --layer all)",
                        in->path, want_type, G, avail);
        }
        if (kept == nf) {
            free(m->col_map);
            m->col_map = NULL;
        }
    }
    if (!rc) {
        in->n_vars = kept;
        const char *colnames[3] = {"gene_ids", "feature_types", "genome"};
        char **src[3] = {ids, types, genome};
        m->mem_var_names = av_calloc((size_t)(kept ? kept : 1), sizeof(char *));
        for (int k = 0; k < 3; k++)
            if (src[k]) {
                push_string(&m->var_columns, &m->n_var_columns, colnames[k]);
                m->mem_var_cols =
                    av_realloc(m->mem_var_cols, (size_t)m->n_var_columns * sizeof(char **));
                m->mem_var_cols[m->n_var_columns - 1] =
                    av_calloc((size_t)(kept ? kept : 1), sizeof(char *));
            }
        for (int64_t i = 0, j = 0; i < nf; i++) {
            if (m->col_map && m->col_map[i] < 0) continue;
            m->mem_var_names[j] = av_strdup(names[i]);
            for (int k = 0, c = 0; k < 3; k++)
                if (src[k]) m->mem_var_cols[c++][j] = av_strdup(src[k][i]);
            j++;
        }
        char *pb = join_path(G, "barcodes");
        rc = read_str_dset(in, pb, nb, &m->mem_obs_names, err);
        free(pb);
    }
    av_free_strings(ids, nf);
    av_free_strings(names, nf);
    av_free_strings(types, nf);
    av_free_strings(genome, nf);
    return rc;
}

/* ---------------------------------------------------------------- loom */

static int open_loom(AvInput *in, const char *layer, char *err) {
    AvInputImpl *m = in->impl;
    hid_t f = m->file;
    NameList ll = children(f, "layers");
    for (int i = 0; i < ll.n; i++) push_string(&m->layers, &m->n_layers, ll.names[i]);
    av_free_strings(ll.names, ll.n);
    if (!layer || !strcmp(layer, "matrix")) {
        in->matrix_name = av_strdup("matrix");
    } else {
        in->matrix_name = join_path("layers", layer);
        if (!h5u_is_dataset(f, in->matrix_name)) {
            char avail[400];
            list_join(avail, sizeof avail, m->layers, m->n_layers);
            return av_err(err, "%s: layer '%s' not found (no dataset /%s); layers present: %s",
                          in->path, layer, in->matrix_name, avail);
        }
    }
    m->mpath = av_strdup(in->matrix_name);
    int rc = 0;
    m->d_dense = open_dset(in, in->matrix_name, err, &rc);
    if (rc) return rc;
    int64_t dims[2];
    if (h5u_dims(m->d_dense, dims) != 2)
        return av_err(err, "%s: /%s: expected a 2-D genes x cells matrix", in->path,
                      in->matrix_name);
    if (bad_shape(dims[1], dims[0])) return shape_err(in, in->matrix_name, dims[1], dims[0], err);
    in->n_vars = dims[0];
    in->n_obs = dims[1];
    m->st = AV_ST_DENSE_T;
    m->nnz_stored = dims[0] * dims[1];
    h5u_type_name(m->d_dense, m->dtype, sizeof m->dtype);
    m->obs_grp = av_strdup("col_attrs");
    m->var_grp = av_strdup("row_attrs");
    if (h5u_is_dataset(f, "col_attrs/CellID")) m->obs_index = av_strdup("col_attrs/CellID");
    if (h5u_is_dataset(f, "row_attrs/Gene")) m->var_index = av_strdup("row_attrs/Gene");
    attr_columns(f, "col_attrs", "CellID", in->n_obs, &in->n_obs_columns, &in->obs_columns);
    attr_columns(f, "row_attrs", "Gene", in->n_vars, &m->n_var_columns, &m->var_columns);
    return 0;
}

/* ---------------------------------------------------------------- open / close */

static AvInputImpl *new_impl(void) {
    AvInputImpl *m = av_calloc(1, sizeof *m);
    m->file = m->d_data = m->d_indices = m->d_indptr = m->d_dense = -1;
    return m;
}

/* A folder holding zarr's metadata: .zgroup/.zattrs (zarr v2) or zarr.json (v3). */
static int zarr_store(const char *dir) {
    static const char *const marks[] = {".zgroup", ".zattrs", "zarr.json"};
    for (int i = 0; i < 3; i++) {
        char *p = join_path(dir, marks[i]);
        int found = access(p, F_OK) == 0;
        free(p);
        if (found) return 1;
    }
    return 0;
}

int av_input_open(AvInput *in, const char *path, const char *layer, char *err) {
    memset(in, 0, sizeof *in);
    h5u_init();
    if (layer && !layer[0]) layer = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) return av_err(err, "%s: cannot open: %s", path, strerror(errno));
    in->path = av_strdup(path);
    in->impl = new_impl();
    AvInputImpl *m = in->impl;
    int rc = 0;
    if (S_ISDIR(sb.st_mode) && zarr_store(path)) {
        rc = av_err(err,
                    "%s: a zarr store (anndata's write_zarr), which atlasvi does not read; write "
                    "it as .h5ad: anndata.read_zarr(path).write_h5ad(...)",
                    path);
    } else if (S_ISDIR(sb.st_mode)) {
        in->format = AV_FMT_MTX_DIR;
        rc = av_mtx_open(in, path, layer, err);
    } else {
        FILE *fp = fopen(path, "rb");
        if (!fp) {
            rc = av_err(err, "%s: cannot open: %s", path, strerror(errno));
        } else {
            fclose(fp);
            size_t pl = strlen(path);
            htri_t is = H5Fis_hdf5(path);
            if (is <= 0 && ((pl > 4 && !strcmp(path + pl - 4, ".mtx")) ||
                            (pl > 7 && !strcmp(path + pl - 7, ".mtx.gz")))) {
                in->format = AV_FMT_MTX_DIR;
                char *dir = av_strdup(path);
                char *slash = strrchr(dir, '/');
                if (slash)
                    *slash = '\0';
                else
                    strcpy(dir, ".");
                rc = av_mtx_open(in, dir, layer, err);
                free(dir);
            } else if (is <= 0) {
                rc = av_err(err,
                            "%s: not an HDF5 file (expected .h5ad, 10x .h5 or .loom, or a "
                            "Matrix Market folder)",
                            path);
            } else if ((m->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT)) < 0) {
                rc =
                    av_err(err, "%s: cannot open as HDF5 (%s): the file looks truncated or corrupt",
                           path, h5u_last_error());
            } else {
                hid_t f = m->file;
                if (h5u_is_group(f, "matrix") &&
                    (h5u_exists(f, "matrix/features") || h5u_exists(f, "matrix/genes"))) {
                    in->format = AV_FMT_10X_H5;
                    rc = open_10x(in, layer, 1, err);
                } else if (h5u_is_dataset(f, "matrix") && h5u_is_group(f, "col_attrs")) {
                    in->format = AV_FMT_LOOM;
                    rc = open_loom(in, layer, err);
                } else if (!h5u_exists(f, "obs") && !h5u_exists(f, "X")) {
                    NameList g = tenx_v2_genomes(f);
                    int v2 = g.n > 0;
                    av_free_strings(g.names, g.n);
                    if (v2) {
                        in->format = AV_FMT_10X_H5;
                        rc = open_10x(in, layer, 0, err);
                    } else {
                        in->format = AV_FMT_H5AD;
                        rc = open_h5ad(in, layer, err);
                    }
                } else {
                    in->format = AV_FMT_H5AD;
                    rc = open_h5ad(in, layer, err);
                }
            }
        }
    }
    if (rc) {
        av_input_close(in);
        return -1;
    }
    return 0;
}

void av_input_close(AvInput *in) {
    AvInputImpl *m = in->impl;
    if (m) {
        hid_t ds[4] = {m->d_data, m->d_indices, m->d_indptr, m->d_dense};
        for (int i = 0; i < 4; i++)
            if (ds[i] >= 0) H5Dclose(ds[i]);
        if (m->file >= 0) H5Fclose(m->file);
        free(m->mpath);
        free(m->no_matrix);
        free(m->col_map);
        free(m->obs_grp);
        free(m->obs_index);
        free(m->var_grp);
        free(m->var_index);
        free(m->tenx_grp);
        av_free_strings(m->mem_obs_names, m->mem_obs_names ? in->n_obs : 0);
        av_free_strings(m->mem_var_names, m->mem_var_names ? in->n_vars : 0);
        if (m->mem_var_cols)
            for (int k = 0; k < m->n_var_columns; k++)
                av_free_strings(m->mem_var_cols[k], in->n_vars);
        free(m->mem_var_cols);
        av_free_strings(m->var_columns, m->n_var_columns);
        av_free_strings(m->layers, m->n_layers);
        av_csr_free(&m->mem);
        free(m);
    }
    free(in->path);
    free(in->matrix_name);
    av_free_strings(in->obs_names, in->obs_names ? in->n_obs : 0);
    av_free_strings(in->var_names, in->var_names ? in->n_vars : 0);
    av_free_strings(in->obs_columns, in->n_obs_columns);
    memset(in, 0, sizeof *in);
}

/* ---------------------------------------------------------------- names */

static char **numbered(int64_t n) {
    char **s = av_calloc((size_t)(n ? n : 1), sizeof *s);
    for (int64_t i = 0; i < n; i++) {
        char b[32];
        snprintf(b, sizeof b, "%lld", (long long)i);
        s[i] = av_strdup(b);
    }
    return s;
}

static char **column_strings(AvColumn *c) {
    char **s = av_calloc((size_t)(c->n ? c->n : 1), sizeof *s);
    for (int64_t i = 0; i < c->n; i++) {
        char b[64];
        if (c->kind == AV_COL_STRING) {
            s[i] = av_strdup(c->strings[i]);
            continue;
        }
        if (c->kind == AV_COL_CATEGORICAL) {
            s[i] = av_strdup(c->codes[i] >= 0 ? c->categories[c->codes[i]] : "NA");
            continue;
        }
        double v = c->values[i];
        if (v == floor(v) && fabs(v) < 1e15)
            snprintf(b, sizeof b, "%lld", (long long)v);
        else
            snprintf(b, sizeof b, "%.15g", v);
        s[i] = av_strdup(b);
    }
    return s;
}

static int read_index(AvInput *in, const char *path, int64_t n, char ***out, char *err) {
    if (!path) {
        *out = numbered(n);
        return 0;
    }
    const char *slash = strrchr(path, '/');
    char grp[512];
    snprintf(grp, sizeof grp, "%.*s", (int)(slash - path), path);
    hid_t g = H5Gopen2(in->impl->file, grp, H5P_DEFAULT);
    AvColumn c;
    int rc = h5u_read_column(g, slash + 1, n, &c, in->path, grp, err);
    H5Gclose(g);
    if (rc) return rc;
    *out = column_strings(&c);
    av_column_free(&c);
    return 0;
}

int av_input_read_names(AvInput *in, char *err) {
    AvInputImpl *m = in->impl;
    if (!in->obs_names) {
        if (m->mem_obs_names) {
            in->obs_names = m->mem_obs_names;
            m->mem_obs_names = NULL;
        } else if (read_index(in, m->obs_index, in->n_obs, &in->obs_names, err)) {
            return -1;
        }
    }
    if (!in->var_names) {
        if (m->mem_var_names) {
            in->var_names = m->mem_var_names;
            m->mem_var_names = NULL;
        } else if (read_index(in, m->var_index, in->n_vars, &in->var_names, err)) {
            return -1;
        }
    }
    return 0;
}

/* A feature name of an antibody-derived tag: "TotalSeq" (any case), "_prot", or "ADT" as
 * a word of the name ("ADT_CD3", "CD4-ADT"; not the gene ADTRP). */
static int antibody_like(const char *name) {
    if (strcasestr(name, "totalseq") || strstr(name, "_prot")) return 1;
    for (const char *p = strstr(name, "ADT"); p; p = strstr(p + 1, "ADT")) {
        int starts = p == name || !isalnum((unsigned char)p[-1]);
        if (starts && !isalnum((unsigned char)p[3])) return 1;
    }
    return 0;
}

int64_t av_input_untyped_antibodies(const AvInput *in, const char **example) {
    int64_t n = 0;
    *example = NULL;
    if (!in->impl->untyped_features || !in->var_names) return 0;
    for (int64_t j = 0; j < in->n_vars; j++)
        if (antibody_like(in->var_names[j]) && n++ == 0) *example = in->var_names[j];
    return n;
}

/* ---------------------------------------------------------------- rows */

typedef struct {
    int64_t n, cap;
    int32_t *idx;
    float *val;
} Buf;

static void buf_push(Buf *b, int32_t c, float v) {
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 1024;
        b->idx = av_realloc(b->idx, (size_t)b->cap * sizeof *b->idx);
        b->val = av_realloc(b->val, (size_t)b->cap * sizeof *b->val);
    }
    b->idx[b->n] = c;
    b->val[b->n++] = v;
}

typedef struct {
    int32_t c;
    float v;
} Entry;

static int entry_cmp(const void *a, const void *b) {
    int32_t x = ((const Entry *)a)->c, y = ((const Entry *)b)->c;
    return (x > y) - (x < y);
}

/* In place: map/validate columns, drop zeros, sort within rows, sum duplicates. */
static int normalize_rows(AvInput *in, AvCsr *o, int64_t row_lo, const int32_t *col_map,
                          int64_t n_file_cols, char *err) {
    int64_t w = 0;
    Entry *tmp = NULL;
    int64_t tmp_cap = 0;
    for (int64_t r = 0; r < o->n_rows; r++) {
        int64_t a = o->indptr[r], b = o->indptr[r + 1], start = w;
        int sorted = 1;
        for (int64_t k = a; k < b; k++) {
            int32_t c = o->indices[k];
            if (c < 0 || c >= n_file_cols) {
                free(tmp);
                return av_err(err, "%s: /%s: column index %d in row %lld is outside [0, %lld)",
                              in->path, in->impl->mpath, c, (long long)(row_lo + r),
                              (long long)n_file_cols);
            }
            if (col_map && (c = col_map[c]) < 0) continue;
            float v = o->data[k];
            if (v == 0.0f) continue;
            if (w > start && c <= o->indices[w - 1]) sorted = 0;
            o->indices[w] = c;
            o->data[w++] = v;
        }
        if (!sorted) {
            int64_t len = w - start;
            if (len > tmp_cap) {
                tmp_cap = len;
                tmp = av_realloc(tmp, (size_t)len * sizeof *tmp);
            }
            for (int64_t k = 0; k < len; k++)
                tmp[k] = (Entry){o->indices[start + k], o->data[start + k]};
            qsort(tmp, (size_t)len, sizeof *tmp, entry_cmp);
            w = start;
            for (int64_t k = 0; k < len; k++) {
                if (w > start && o->indices[w - 1] == tmp[k].c) {
                    o->data[w - 1] += tmp[k].v;
                    if (o->data[w - 1] == 0.0f) w--;
                    continue;
                }
                o->indices[w] = tmp[k].c;
                o->data[w++] = tmp[k].v;
            }
        }
        o->indptr[r] = start;
    }
    o->indptr[o->n_rows] = w;
    free(tmp);
    return 0;
}

static int read_err(AvInput *in, const char *what, char *err) {
    return av_err(err, "%s: reading %s failed (%s); the file may be truncated or corrupt", in->path,
                  what, h5u_last_error());
}

static int rows_csr(AvInput *in, int64_t lo, int64_t hi, AvCsr *o, char *err) {
    AvInputImpl *m = in->impl;
    int64_t nr = hi - lo;
    o->indptr = av_malloc((size_t)(nr + 1) * sizeof(int64_t));
    char what[600];
    snprintf(what, sizeof what, "/%s/indptr", m->mpath);
    if (h5u_read_slab(m->d_indptr, H5T_NATIVE_INT64, lo, nr + 1, o->indptr))
        return read_err(in, what, err);
    int64_t z0 = o->indptr[0], z1 = o->indptr[nr];
    for (int64_t r = 0; r < nr; r++)
        if (o->indptr[r + 1] < o->indptr[r])
            return av_err(err, "%s: %s decreases at row %lld", in->path, what,
                          (long long)(lo + r + 1));
    if (z0 < 0 || z1 > m->nnz_stored)
        return av_err(err, "%s: %s points outside [0, %lld] (rows %lld..%lld)", in->path, what,
                      (long long)m->nnz_stored, (long long)lo, (long long)hi);
    int64_t nz = z1 - z0;
    o->indices = av_malloc((size_t)(nz ? nz : 1) * sizeof(int32_t));
    o->data = av_malloc((size_t)(nz ? nz : 1) * sizeof(float));
    snprintf(what, sizeof what, "/%s/indices", m->mpath);
    if (h5u_read_slab_inflate(m->d_indices, H5T_NATIVE_INT32, z0, nz, o->indices))
        return read_err(in, what, err);
    snprintf(what, sizeof what, "/%s/data", m->mpath);
    if (h5u_read_slab_inflate(m->d_data, H5T_NATIVE_FLOAT, z0, nz, o->data))
        return read_err(in, what, err);
    for (int64_t r = 0; r <= nr; r++) o->indptr[r] -= z0;
    return normalize_rows(in, o, lo, m->col_map, m->n_file_cols, err);
}

/* Whole-matrix indptr of the CSC file (column pointers). */
static int csc_colptr(AvInput *in, int64_t **cp, char *err) {
    AvInputImpl *m = in->impl;
    *cp = av_malloc((size_t)(m->n_major + 1) * sizeof(int64_t));
    if (h5u_read_slab(m->d_indptr, H5T_NATIVE_INT64, 0, m->n_major + 1, *cp)) {
        char what[600];
        snprintf(what, sizeof what, "/%s/indptr", m->mpath);
        return read_err(in, what, err);
    }
    for (int64_t j = 0; j < m->n_major; j++)
        if ((*cp)[j + 1] < (*cp)[j] || (*cp)[0] < 0 || (*cp)[m->n_major] > m->nnz_stored)
            return av_err(err, "%s: /%s/indptr is not a valid column pointer", in->path, m->mpath);
    return 0;
}

static int rows_csc(AvInput *in, int64_t lo, int64_t hi, AvCsr *o, char *err) {
    AvInputImpl *m = in->impl;
    if (!m->csc_logged) {
        fprintf(stderr,
                "atlasvi: note: %s: /%s is CSC; reading rows scans the whole matrix "
                "(convert to CSR for large files)\n",
                in->path, m->mpath);
        m->csc_logged = 1;
    }
    int64_t *cp = NULL;
    if (csc_colptr(in, &cp, err)) {
        free(cp);
        return -1;
    }
    int64_t total = cp[m->n_major] - cp[0];
    int64_t *rowi = NULL, *coli = NULL;
    float *vals = NULL;
    int64_t cnt = 0, cap = 0;
    int32_t *bi = av_malloc((size_t)BLOCK_ELEMS * sizeof *bi);
    float *bv = av_malloc((size_t)BLOCK_ELEMS * sizeof *bv);
    int64_t col = 0, rc = 0;
    for (int64_t s = cp[0]; s < cp[0] + total && !rc; s += BLOCK_ELEMS) {
        int64_t len = cp[0] + total - s < BLOCK_ELEMS ? cp[0] + total - s : BLOCK_ELEMS;
        if (h5u_read_slab(m->d_indices, H5T_NATIVE_INT32, s, len, bi) ||
            h5u_read_slab(m->d_data, H5T_NATIVE_FLOAT, s, len, bv)) {
            rc = read_err(in, "CSC indices/data", err);
            break;
        }
        for (int64_t k = 0; k < len; k++) {
            while (cp[col + 1] <= s + k) col++;
            int32_t r = bi[k];
            if (r < 0 || r >= in->n_obs) {
                rc =
                    av_err(err, "%s: /%s/indices: row index %d in column %lld is outside [0, %lld)",
                           in->path, m->mpath, r, (long long)col, (long long)in->n_obs);
                break;
            }
            if (r < lo || r >= hi) continue;
            if (cnt == cap) {
                cap = cap ? 2 * cap : 4096;
                rowi = av_realloc(rowi, (size_t)cap * sizeof *rowi);
                coli = av_realloc(coli, (size_t)cap * sizeof *coli);
                vals = av_realloc(vals, (size_t)cap * sizeof *vals);
            }
            rowi[cnt] = r - lo;
            coli[cnt] = col;
            vals[cnt++] = bv[k];
        }
    }
    free(bi);
    free(bv);
    free(cp);
    if (!rc) {
        av_csr_from_triplets(o, cnt, rowi, coli, vals);
    }
    free(rowi);
    free(coli);
    free(vals);
    if (rc) return -1;
    return normalize_rows(in, o, lo, NULL, in->n_vars, err);
}

static int rows_dense(AvInput *in, int64_t lo, int64_t hi, AvCsr *o, char *err) {
    AvInputImpl *m = in->impl;
    int transposed = m->st == AV_ST_DENSE_T;
    int64_t nr = hi - lo, G = in->n_vars;
    int64_t step = G > 0 ? BLOCK_ELEMS / G : nr;
    if (step < 1) step = 1;
    float *blk = av_malloc((size_t)((step < nr ? step : nr) * (G ? G : 1) + 1) * sizeof *blk);
    Buf b = {0, 0, NULL, NULL};
    o->indptr = av_malloc((size_t)(nr + 1) * sizeof(int64_t));
    o->indptr[0] = 0;
    hid_t fs = H5Dget_space(m->d_dense);
    int rc = 0;
    for (int64_t r0 = lo; r0 < hi && !rc; r0 += step) {
        int64_t cnt = hi - r0 < step ? hi - r0 : step;
        hsize_t start[2], count[2];
        if (transposed) {
            start[0] = 0, start[1] = (hsize_t)r0, count[0] = (hsize_t)G, count[1] = (hsize_t)cnt;
        } else {
            start[0] = (hsize_t)r0, start[1] = 0, count[0] = (hsize_t)cnt, count[1] = (hsize_t)G;
        }
        if (G > 0) {
            H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
            hid_t ms = H5Screate_simple(2, count, NULL);
            herr_t st = H5Dread(m->d_dense, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, blk);
            H5Sclose(ms);
            if (st < 0) {
                char what[600];
                snprintf(what, sizeof what, "/%s", m->mpath);
                rc = read_err(in, what, err);
                break;
            }
        }
        for (int64_t r = 0; r < cnt; r++) {
            for (int64_t g = 0; g < G; g++) {
                float v = transposed ? blk[g * cnt + r] : blk[r * G + g];
                if (v != 0.0f) buf_push(&b, (int32_t)g, v);
            }
            o->indptr[r0 - lo + r + 1] = b.n;
        }
    }
    H5Sclose(fs);
    free(blk);
    o->indices = b.idx ? b.idx : av_malloc(sizeof(int32_t));
    o->data = b.val ? b.val : av_malloc(sizeof(float));
    return rc;
}

static int rows_mem(AvInput *in, int64_t lo, int64_t hi, AvCsr *o) {
    const AvCsr *s = &in->impl->mem;
    int64_t nr = hi - lo, z0 = s->indptr[lo], nz = s->indptr[hi] - z0;
    o->indptr = av_malloc((size_t)(nr + 1) * sizeof(int64_t));
    for (int64_t r = 0; r <= nr; r++) o->indptr[r] = s->indptr[lo + r] - z0;
    o->indices = av_malloc((size_t)(nz ? nz : 1) * sizeof(int32_t));
    o->data = av_malloc((size_t)(nz ? nz : 1) * sizeof(float));
    if (nz) {
        memcpy(o->indices, s->indices + z0, (size_t)nz * sizeof(int32_t));
        memcpy(o->data, s->data + z0, (size_t)nz * sizeof(float));
    }
    return 0;
}

int av_input_read_rows(AvInput *in, int64_t row_lo, int64_t row_hi, AvCsr *out, char *err) {
    memset(out, 0, sizeof *out);
    if (in->impl->st == AV_ST_NONE) return av_err(err, "%s", in->impl->no_matrix);
    if (row_lo < 0 || row_hi < row_lo || row_hi > in->n_obs)
        return av_err(err, "%s: rows [%lld, %lld) requested but the matrix has %lld rows", in->path,
                      (long long)row_lo, (long long)row_hi, (long long)in->n_obs);
    out->n_rows = row_hi - row_lo;
    out->n_cols = in->n_vars;
    int rc;
    switch (in->impl->st) {
    case AV_ST_CSR:
        rc = rows_csr(in, row_lo, row_hi, out, err);
        break;
    case AV_ST_CSC:
        rc = rows_csc(in, row_lo, row_hi, out, err);
        break;
    case AV_ST_MEM:
        rc = rows_mem(in, row_lo, row_hi, out);
        break;
    default:
        rc = rows_dense(in, row_lo, row_hi, out, err);
        break;
    }
    if (rc) {
        av_csr_free(out);
        return -1;
    }
    return 0;
}

int av_input_read_indptr(AvInput *in, int64_t *indptr, char *err) {
    AvInputImpl *m = in->impl;
    int64_t n = in->n_obs;
    if (m->st == AV_ST_NONE) return av_err(err, "%s", m->no_matrix);
    if (m->st == AV_ST_MEM) {
        memcpy(indptr, m->mem.indptr, (size_t)(n + 1) * sizeof *indptr);
        return 0;
    }
    if (m->st == AV_ST_CSR) {
        char what[600];
        snprintf(what, sizeof what, "/%s/indptr", m->mpath);
        if (h5u_read_slab(m->d_indptr, H5T_NATIVE_INT64, 0, n + 1, indptr))
            return read_err(in, what, err);
        int64_t z0 = indptr[0];
        for (int64_t r = 0; r < n; r++)
            if (indptr[r + 1] < indptr[r])
                return av_err(err, "%s: %s decreases at row %lld", in->path, what,
                              (long long)(r + 1));
        /* as rows_csr: checked before rebasing (a crafted indptr[0] near INT64_MIN overflowed) */
        if (z0 < 0 || indptr[n] > m->nnz_stored)
            return av_err(err, "%s: %s points outside [0, %lld]", in->path, what,
                          (long long)m->nnz_stored);
        for (int64_t r = 0; r <= n; r++) indptr[r] -= z0;
        if (!m->col_map) return 0;
        /* 10x with a feature filter: count kept features per cell, a block of rows at a time. */
        int32_t *bi = NULL;
        int64_t cap = 0, *cnt = av_calloc((size_t)(n + 1), sizeof *cnt);
        int rc = 0;
        for (int64_t r0 = 0; r0 < n && !rc;) {
            int64_t r1 = r0 + 1;
            while (r1 < n && indptr[r1 + 1] - indptr[r0] <= BLOCK_ELEMS) r1++;
            int64_t len = indptr[r1] - indptr[r0];
            if (len > cap) bi = av_realloc(bi, (size_t)(cap = len) * sizeof *bi);
            if (h5u_read_slab(m->d_indices, H5T_NATIVE_INT32, z0 + indptr[r0], len, bi)) {
                rc = read_err(in, "indices", err);
                break;
            }
            for (int64_t r = r0; r < r1; r++)
                for (int64_t k = indptr[r]; k < indptr[r + 1]; k++) {
                    int32_t c = bi[k - indptr[r0]];
                    if (c >= 0 && c < m->n_file_cols && m->col_map[c] >= 0) cnt[r + 1]++;
                }
            r0 = r1;
        }
        free(bi);
        if (!rc)
            for (int64_t r = 0; r < n; r++) indptr[r + 1] = indptr[r] + cnt[r + 1];
        indptr[0] = 0;
        free(cnt);
        return rc;
    }
    if (m->st == AV_ST_CSC) {
        int64_t *cp = NULL;
        if (csc_colptr(in, &cp, err)) {
            free(cp);
            return -1;
        }
        memset(indptr, 0, (size_t)(n + 1) * sizeof *indptr);
        int32_t *bi = av_malloc((size_t)BLOCK_ELEMS * sizeof *bi);
        int rc = 0;
        for (int64_t s = cp[0]; s < cp[m->n_major] && !rc; s += BLOCK_ELEMS) {
            int64_t len = cp[m->n_major] - s < BLOCK_ELEMS ? cp[m->n_major] - s : BLOCK_ELEMS;
            if (h5u_read_slab(m->d_indices, H5T_NATIVE_INT32, s, len, bi)) {
                rc = read_err(in, "CSC indices", err);
                break;
            }
            for (int64_t k = 0; k < len; k++)
                if (bi[k] >= 0 && bi[k] < n) indptr[bi[k] + 1]++;
        }
        free(bi);
        free(cp);
        for (int64_t r = 0; r < n; r++) indptr[r + 1] += indptr[r];
        return rc;
    }
    /* Dense: count non-zeros a block at a time. */
    int64_t step = in->n_vars > 0 ? BLOCK_ELEMS / in->n_vars : n;
    if (step < 1) step = 1;
    indptr[0] = 0;
    for (int64_t r0 = 0; r0 < n; r0 += step) {
        int64_t r1 = r0 + step < n ? r0 + step : n;
        AvCsr blk;
        if (av_input_read_rows(in, r0, r1, &blk, err)) return -1;
        for (int64_t r = 0; r < r1 - r0; r++) indptr[r0 + r + 1] = indptr[r0] + blk.indptr[r + 1];
        av_csr_free(&blk);
    }
    return 0;
}

/* ---------------------------------------------------------------- columns */

static int find_key(char **keys, int n, const char *key) {
    for (int i = 0; i < n; i++)
        if (!strcmp(keys[i], key)) return i;
    return -1;
}

static int read_column_common(AvInput *in, const char *key, AvColumn *out, char *err, int is_var) {
    AvInputImpl *m = in->impl;
    memset(out, 0, sizeof *out);
    char **keys = is_var ? m->var_columns : in->obs_columns;
    int nk = is_var ? m->n_var_columns : in->n_obs_columns;
    const char *kind = is_var ? "var" : "obs";
    int k = find_key(keys, nk, key);
    if (k < 0) {
        char avail[400];
        list_join(avail, sizeof avail, keys, nk);
        return av_err(err, "%s: %s column '%s' not found; available %s columns: %s", in->path, kind,
                      key, kind, avail);
    }
    int64_t n = is_var ? in->n_vars : in->n_obs;
    if (is_var && m->mem_var_cols) {
        out->name = av_strdup(key);
        out->kind = AV_COL_STRING;
        out->n = n;
        out->strings = av_calloc((size_t)(n ? n : 1), sizeof(char *));
        for (int64_t i = 0; i < n; i++) out->strings[i] = av_strdup(m->mem_var_cols[k][i]);
        return 0;
    }
    const char *grp = is_var ? m->var_grp : m->obs_grp;
    hid_t g = H5Gopen2(m->file, grp, H5P_DEFAULT);
    if (g < 0) return av_err(err, "%s: cannot open /%s", in->path, grp);
    int rc = h5u_read_column(g, key, n, out, in->path, grp, err);
    H5Gclose(g);
    return rc;
}

int av_input_read_obs_column(AvInput *in, const char *key, AvColumn *out, char *err) {
    return read_column_common(in, key, out, err, 0);
}

int av_input_read_var_column(AvInput *in, const char *key, AvColumn *out, char *err) {
    return read_column_common(in, key, out, err, 1);
}

int av_input_var_columns(const AvInput *in, char ***names) {
    *names = in->impl->var_columns;
    return in->impl->n_var_columns;
}

int av_input_layers(const AvInput *in, char ***names) {
    *names = in->impl->layers;
    return in->impl->n_layers;
}

const char *av_input_dtype(const AvInput *in) {
    return in->impl->dtype;
}

const char *av_input_storage(const AvInput *in) {
    switch (in->impl->st) {
    case AV_ST_CSR:
        return in->format == AV_FMT_10X_H5 ? "csc genes x cells (read as csr)" : "csr";
    case AV_ST_CSC:
        return "csc";
    case AV_ST_DENSE:
        return "dense";
    case AV_ST_DENSE_T:
        return "dense genes x cells";
    case AV_ST_MEM:
        return "coordinate (parsed to csr)";
    case AV_ST_NONE:
        return "none";
    }
    return "?";
}

/* ---------------------------------------------------------------- categoricals */

static int str_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int dbl_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int av_column_to_categorical(AvColumn *c) {
    if (c->kind == AV_COL_CATEGORICAL) return 0;
    int64_t n = c->n;
    int32_t *codes = av_malloc((size_t)(n ? n : 1) * sizeof *codes);
    char **cats = NULL;
    int64_t nc = 0;
    if (c->kind == AV_COL_STRING) {
        char **sorted = av_malloc((size_t)(n ? n : 1) * sizeof *sorted);
        memcpy(sorted, c->strings, (size_t)n * sizeof *sorted);
        qsort(sorted, (size_t)n, sizeof *sorted, str_cmp);
        cats = av_malloc((size_t)(n ? n : 1) * sizeof *cats);
        for (int64_t i = 0; i < n; i++)
            if (!nc || strcmp(cats[nc - 1], sorted[i])) cats[nc++] = sorted[i];
        for (int64_t i = 0; i < n; i++) {
            char **hit = bsearch(&c->strings[i], cats, (size_t)nc, sizeof *cats, str_cmp);
            codes[i] = (int32_t)(hit - cats);
        }
        for (int64_t i = 0; i < nc; i++) cats[i] = av_strdup(cats[i]);
        free(sorted);
        av_free_strings(c->strings, n);
        c->strings = NULL;
    } else {
        double *sorted = av_malloc((size_t)(n ? n : 1) * sizeof *sorted);
        int64_t m = 0;
        for (int64_t i = 0; i < n; i++)
            if (!isnan(c->values[i])) sorted[m++] = c->values[i];
        qsort(sorted, (size_t)m, sizeof *sorted, dbl_cmp);
        int64_t u = 0;
        for (int64_t i = 0; i < m; i++)
            if (!u || sorted[u - 1] != sorted[i]) sorted[u++] = sorted[i];
        cats = av_malloc((size_t)(u ? u : 1) * sizeof *cats);
        for (int64_t i = 0; i < u; i++) {
            char b[64];
            if (sorted[i] == floor(sorted[i]) && fabs(sorted[i]) < 1e15)
                snprintf(b, sizeof b, "%lld", (long long)sorted[i]);
            else
                snprintf(b, sizeof b, "%.15g", sorted[i]);
            cats[i] = av_strdup(b);
        }
        nc = u;
        for (int64_t i = 0; i < n; i++) {
            if (isnan(c->values[i])) {
                codes[i] = -1;
                continue;
            }
            double *hit = bsearch(&c->values[i], sorted, (size_t)u, sizeof *sorted, dbl_cmp);
            codes[i] = (int32_t)(hit - sorted);
        }
        free(sorted);
        free(c->values);
        c->values = NULL;
    }
    c->kind = AV_COL_CATEGORICAL;
    c->codes = codes;
    c->categories = cats;
    c->n_categories = (int32_t)nc;
    return 0;
}
