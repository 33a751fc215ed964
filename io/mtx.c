/* Matrix Market folders (10x "MEX"): matrix.mtx[.gz] (features x barcodes, 1-based),
 * features.tsv[.gz] or genes.tsv[.gz], barcodes.tsv[.gz]. Parsed once into a CSR over
 * cells (counting sort on the barcode, sorted within rows, duplicates summed). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "io/input.h"
#include "io/input_impl.h"
#include "src/util.h"

#define LINE_MAX_LEN 65536

static char *find_file(const char *dir, const char *const *names) {
    for (int i = 0; names[i]; i++) {
        size_t n = strlen(dir) + strlen(names[i]) + 2;
        char *p = av_malloc(n);
        snprintf(p, n, "%s/%s", dir, names[i]);
        struct stat sb;
        if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode)) return p;
        free(p);
    }
    return NULL;
}

static void chomp(char *s) {
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r')) s[--n] = '\0';
}

/* Reads a TSV: one row per non-empty line, fields split on tabs. */
typedef struct {
    int64_t n;
    int ncol;       /* fields of the first line */
    char ***fields; /* [n][ncol] (missing fields are "") */
} Tsv;

static void tsv_free(Tsv *t) {
    for (int64_t i = 0; i < t->n; i++) av_free_strings(t->fields[i], t->ncol);
    free(t->fields);
    memset(t, 0, sizeof *t);
}

static int read_tsv(const char *path, Tsv *t, char *err) {
    memset(t, 0, sizeof *t);
    gzFile g = gzopen(path, "rb");
    if (!g) return av_err(err, "%s: cannot open: %s", path, strerror(errno));
    char *line = av_malloc(LINE_MAX_LEN);
    int64_t cap = 0;
    int rc = 0;
    while (gzgets(g, line, LINE_MAX_LEN)) {
        chomp(line);
        if (!line[0]) continue;
        if (t->ncol == 0) {
            t->ncol = 1;
            for (char *c = line; *c; c++) t->ncol += *c == '\t';
        }
        if (t->n == cap) {
            cap = cap ? 2 * cap : 1024;
            t->fields = av_realloc(t->fields, (size_t)cap * sizeof *t->fields);
        }
        char **row = av_calloc((size_t)t->ncol, sizeof *row);
        char *s = line;
        for (int k = 0; k < t->ncol; k++) {
            char *tab = s ? strchr(s, '\t') : NULL;
            if (tab) *tab = '\0';
            row[k] = av_strdup(s ? s : "");
            s = tab ? tab + 1 : NULL;
        }
        t->fields[t->n++] = row;
    }
    int ze;
    const char *zmsg = gzerror(g, &ze);
    if (ze != Z_OK && ze != Z_STREAM_END)
        rc = av_err(err, "%s: read error (%s): truncated or corrupt file?", path, zmsg);
    gzclose(g);
    free(line);
    if (rc) tsv_free(t);
    return rc;
}

/* Triplets read so far; grown as entries arrive, so that a header claiming more entries
 * than the file holds costs no memory. */
typedef struct {
    int64_t *fi, *ci;
    float *vv;
    int64_t n, cap;
} Triplets;

static void triplets_push(Triplets *t, int64_t f, int64_t c, float v, int64_t max) {
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 4096;
        if (t->cap > max) t->cap = max;
        t->fi = av_realloc(t->fi, (size_t)t->cap * sizeof *t->fi);
        t->ci = av_realloc(t->ci, (size_t)t->cap * sizeof *t->ci);
        t->vv = av_realloc(t->vv, (size_t)t->cap * sizeof *t->vv);
    }
    t->fi[t->n] = f;
    t->ci[t->n] = c;
    t->vv[t->n++] = v;
}

static void triplets_free(Triplets *t) {
    free(t->fi);
    free(t->ci);
    free(t->vv);
    memset(t, 0, sizeof *t);
}

/* The most entries a file of this size can hold: each takes a line of at least
 * min_line bytes; a gzip member inflates at most 1032-fold. */
static int64_t max_entries(const char *path, int compressed, int min_line) {
    struct stat sb;
    if (stat(path, &sb) != 0) return INT64_MAX;
    double bytes = (double)sb.st_size * (compressed ? 1032.0 : 1.0);
    return bytes / min_line >= 9e18 ? INT64_MAX : (int64_t)(bytes / min_line);
}

/* The header's sizes against the companion files and the file size, before anything is
 * allocated for them. */
static int check_sizes(const char *path, int compressed, int pattern, int64_t nr, int64_t nc,
                       int64_t nnz, int64_t n_feat, int64_t n_bc, char *err) {
    if (nr != n_feat)
        return av_err(err, "%s: the size line says %lld features but the features file lists %lld",
                      path, (long long)nr, (long long)n_feat);
    if (nc != n_bc)
        return av_err(err, "%s: the size line says %lld barcodes but the barcodes file lists %lld",
                      path, (long long)nc, (long long)n_bc);
    int64_t most = max_entries(path, compressed, pattern ? 4 : 6);
    if (nnz > most)
        return av_err(err,
                      "%s: the size line claims %lld entries, more than the file can hold "
                      "(at most %lld)",
                      path, (long long)nnz, (long long)most);
    return 0;
}

static int parse_matrix(AvInput *in, const char *path, int64_t n_feat, int64_t n_bc, char *err) {
    gzFile g = gzopen(path, "rb");
    if (!g) return av_err(err, "%s: cannot open: %s", path, strerror(errno));
    char *line = av_malloc(LINE_MAX_LEN);
    int rc = 0, pattern = 0;
    int64_t nr = -1, nc = -1, nnz = -1, lineno = 0;
    if (!gzgets(g, line, LINE_MAX_LEN) || strncmp(line, "%%MatrixMarket", 14) != 0) {
        rc = av_err(err, "%s: expected a '%%%%MatrixMarket matrix coordinate ...' header line",
                    path);
    } else {
        lineno = 1;
        char obj[64] = "", fmt[64] = "", field[64] = "", sym[64] = "";
        sscanf(line + 14, "%63s %63s %63s %63s", obj, fmt, field, sym);
        for (char *c = sym; *c; c++) *c = (char)(*c | 0x20);
        for (char *c = fmt; *c; c++) *c = (char)(*c | 0x20);
        for (char *c = field; *c; c++) *c = (char)(*c | 0x20);
        if (strcmp(fmt, "coordinate"))
            rc = av_err(err, "%s: Matrix Market format '%s' is not supported (expected coordinate)",
                        path, fmt);
        else if (strcmp(sym, "general"))
            rc = av_err(err, "%s: Matrix Market symmetry '%s' is not supported (expected general)",
                        path, sym);
        else if (strcmp(field, "integer") && strcmp(field, "real") && strcmp(field, "pattern"))
            rc = av_err(err,
                        "%s: Matrix Market field '%s' is not supported (expected integer, "
                        "real or pattern)",
                        path, field);
        pattern = !strcmp(field, "pattern");
    }
    while (!rc && gzgets(g, line, LINE_MAX_LEN)) {
        lineno++;
        if (line[0] == '%') continue;
        long long a, b, c;
        if (sscanf(line, "%lld %lld %lld", &a, &b, &c) != 3 || a < 0 || b < 0 || c < 0)
            rc = av_err(err, "%s: line %lld: expected the size line 'n_features n_barcodes nnz'",
                        path, (long long)lineno);
        nr = a, nc = b, nnz = c;
        break;
    }
    if (!rc && nr < 0) rc = av_err(err, "%s: no size line (empty or truncated file)", path);
    if (!rc) rc = check_sizes(path, !gzdirect(g), pattern, nr, nc, nnz, n_feat, n_bc, err);
    if (!rc && (nr > INT32_MAX || nc > INT32_MAX))
        rc = av_err(err, "%s: %lld x %lld is too large", path, (long long)nr, (long long)nc);
    Triplets t = {0};
    while (!rc && t.n < nnz && gzgets(g, line, LINE_MAX_LEN)) {
        lineno++;
        if (line[0] == '%' || line[0] == '\n') continue;
        char *p = line, *e;
        long long r = strtoll(p, &e, 10);
        if (e == p) goto bad;
        p = e;
        long long c = strtoll(p, &e, 10);
        if (e == p) goto bad;
        p = e;
        double v = 1.0;
        if (!pattern) {
            v = strtod(p, &e);
            if (e == p) goto bad;
        }
        if (r < 1 || r > nr || c < 1 || c > nc) {
            rc = av_err(err,
                        "%s: line %lld: entry (%lld, %lld) is outside the %lld x %lld matrix "
                        "(indices are 1-based)",
                        path, (long long)lineno, r, c, (long long)nr, (long long)nc);
            break;
        }
        triplets_push(&t, r - 1, c - 1, (float)v, nnz);
        continue;
    bad:;
        int ze = Z_OK;
        const char *zmsg = gzerror(g, &ze);
        if (ze != Z_OK && ze != Z_STREAM_END)
            rc = av_err(err, "%s: line %lld: %s: the file looks truncated or corrupt", path,
                        (long long)lineno, zmsg);
        else
            rc = av_err(err, "%s: line %lld: expected 'row col%s'", path, (long long)lineno,
                        pattern ? "" : " value");
    }
    if (!rc && t.n < nnz) {
        int ze;
        const char *zmsg = gzerror(g, &ze);
        rc = av_err(err, "%s: %lld of %lld entries found (%s): truncated file?", path,
                    (long long)t.n, (long long)nnz,
                    ze == Z_OK || ze == Z_STREAM_END ? "end of file" : zmsg);
    }
    gzclose(g);
    free(line);
    if (!rc) {
        /* Counting sort by barcode (cell) into CSR; rows are normalized below. */
        AvCsr *m = &in->impl->mem;
        m->n_rows = nc;
        m->n_cols = nr;
        av_csr_from_triplets(m, t.n, t.ci, t.fi, t.vv);
    }
    triplets_free(&t);
    return rc;
}

typedef struct {
    int32_t c;
    float v;
} Entry;

static int entry_cmp(const void *a, const void *b) {
    int32_t x = ((const Entry *)a)->c, y = ((const Entry *)b)->c;
    return (x > y) - (x < y);
}

/* Maps columns (dropping unkept ones), drops zeros, sorts rows, sums duplicates. */
static void normalize(AvCsr *m, const int32_t *col_map, int64_t n_cols) {
    int64_t w = 0, cap = 0;
    Entry *tmp = NULL;
    for (int64_t r = 0; r < m->n_rows; r++) {
        int64_t a = m->indptr[r], b = m->indptr[r + 1];
        int64_t len = 0;
        if (b - a > cap) tmp = av_realloc(tmp, (size_t)(cap = b - a) * sizeof *tmp);
        for (int64_t k = a; k < b; k++) {
            int32_t c = col_map ? col_map[m->indices[k]] : m->indices[k];
            if (c >= 0) tmp[len++] = (Entry){c, m->data[k]};
        }
        if (len > 1) qsort(tmp, (size_t)len, sizeof *tmp, entry_cmp); /* tmp may be NULL */
        m->indptr[r] = w;
        int64_t start = w;
        for (int64_t k = 0; k < len; k++) {
            if (w > start && m->indices[w - 1] == tmp[k].c) {
                m->data[w - 1] += tmp[k].v;
                continue;
            }
            m->indices[w] = tmp[k].c;
            m->data[w++] = tmp[k].v;
        }
        /* Drop zeros (stored or summed to zero). */
        int64_t z = start;
        for (int64_t k = start; k < w; k++)
            if (m->data[k] != 0.0f) {
                m->indices[z] = m->indices[k];
                m->data[z++] = m->data[k];
            }
        w = z;
    }
    m->indptr[m->n_rows] = w;
    m->n_cols = n_cols;
    free(tmp);
}

int av_mtx_open(AvInput *in, const char *dir, const char *layer, char *err) {
    AvInputImpl *m = in->impl;
    static const char *const mnames[] = {"matrix.mtx.gz", "matrix.mtx", NULL};
    static const char *const fnames[] = {"features.tsv.gz", "features.tsv", "genes.tsv.gz",
                                         "genes.tsv", NULL};
    static const char *const bnames[] = {"barcodes.tsv.gz", "barcodes.tsv", NULL};
    char *pm = find_file(dir, mnames), *pf = find_file(dir, fnames), *pb = find_file(dir, bnames);
    int rc = 0;
    int64_t nf = 0;
    Tsv feat = {0}, bc = {0};
    if (!pm || !pf || !pb) {
        rc = av_err(err,
                    "%s: not a Matrix Market folder: missing %s (expected matrix.mtx[.gz], "
                    "features.tsv[.gz] or genes.tsv[.gz], and barcodes.tsv[.gz])",
                    dir,
                    !pm   ? "matrix.mtx[.gz]"
                    : !pf ? "features.tsv[.gz]/genes.tsv[.gz]"
                          : "barcodes.tsv[.gz]");
        goto done;
    }
    const char *base = strrchr(pm, '/') + 1;
    in->matrix_name = av_strdup(base);
    m->mpath = av_strdup(base);
    m->st = AV_ST_MEM;
    snprintf(m->dtype, sizeof m->dtype, "text");
    if ((rc = read_tsv(pf, &feat, err)) || (rc = read_tsv(pb, &bc, err))) goto done;
    if ((rc = parse_matrix(in, pm, feat.n, bc.n, err))) goto done;
    nf = feat.n;
    /* Feature types (third column of features.tsv), selectable like 10x HDF5. */
    int has_type = feat.ncol >= 3;
    m->untyped_features = !has_type;
    const char *want = layer ? layer : "Gene Expression";
    if (!has_type && layer && strcmp(layer, "all") && strcmp(layer, "Gene Expression")) {
        rc = av_err(err, "%s: no feature_type column, so layer '%s' cannot be selected", pf, layer);
        goto done;
    }
    if (has_type)
        for (int64_t i = 0; i < nf; i++) {
            int seen = 0;
            for (int k = 0; k < m->n_layers && !seen; k++)
                seen = !strcmp(m->layers[k], feat.fields[i][2]);
            if (!seen) {
                m->layers = av_realloc(m->layers, (size_t)(m->n_layers + 1) * sizeof(char *));
                m->layers[m->n_layers++] = av_strdup(feat.fields[i][2]);
            }
        }
    int32_t *col_map = av_malloc((size_t)(nf ? nf : 1) * sizeof *col_map);
    int64_t kept = 0;
    for (int64_t i = 0; i < nf; i++)
        col_map[i] = (!has_type || !strcmp(want, "all") || !strcmp(feat.fields[i][2], want))
                         ? (int32_t)kept++
                         : -1;
    if (kept == 0 && nf > 0) {
        free(col_map);
        rc = av_err(err,
                    "%s: no features of type '%s' (select another with --layer TYPE, or "
                    "--layer all)",
                    pf, want);
        goto done;
    }
    normalize(&m->mem, kept == nf ? NULL : col_map, kept);
    in->n_obs = m->mem.n_rows;
    in->n_vars = kept;
    m->nnz_stored = m->mem.indptr[m->mem.n_rows];
    /* Names and var columns. */
    m->mem_obs_names = av_calloc((size_t)(bc.n ? bc.n : 1), sizeof(char *));
    for (int64_t i = 0; i < bc.n; i++) m->mem_obs_names[i] = av_strdup(bc.fields[i][0]);
    int ncols = feat.ncol >= 3 ? 2 : 1;
    static const char *const vcols[] = {"gene_ids", "feature_types"};
    m->var_columns = av_calloc((size_t)ncols, sizeof(char *));
    m->mem_var_cols = av_calloc((size_t)ncols, sizeof(char **));
    for (int k = 0; k < ncols; k++) {
        m->var_columns[k] = av_strdup(vcols[k]);
        m->mem_var_cols[k] = av_calloc((size_t)(kept ? kept : 1), sizeof(char *));
    }
    m->n_var_columns = ncols;
    m->mem_var_names = av_calloc((size_t)(kept ? kept : 1), sizeof(char *));
    for (int64_t i = 0; i < nf; i++) {
        int32_t j = col_map[i];
        if (j < 0) continue;
        m->mem_var_names[j] = av_strdup(feat.fields[i][feat.ncol >= 2 ? 1 : 0]);
        m->mem_var_cols[0][j] = av_strdup(feat.fields[i][0]);
        if (ncols > 1) m->mem_var_cols[1][j] = av_strdup(feat.fields[i][2]);
    }
    free(col_map);
done:
    tsv_free(&feat);
    tsv_free(&bc);
    free(pm);
    free(pf);
    free(pb);
    return rc;
}
