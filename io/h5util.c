#include "io/h5util.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "io/input.h"
#include "src/util.h"

void h5u_init(void) {
    static int done = 0;
    if (!done) {
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        done = 1;
    }
    av_register_lzf();
}

static char last_err[256], noted_err[256];

static herr_t walk_cb(unsigned n, const H5E_error2_t *e, void *data) {
    char *out = data;
    if (n == 0 && e->desc) snprintf(out, 256, "%s", e->desc);
    return 0;
}

/* Keeps HDF5's message of a failed call before clean-up calls (which clear the error
 * stack) run. */
static void note_error(void) {
    noted_err[0] = '\0';
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_cb, noted_err);
}

const char *h5u_last_error(void) {
    last_err[0] = '\0';
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_cb, last_err);
    if (!last_err[0]) snprintf(last_err, sizeof last_err, "%s", noted_err);
    if (!last_err[0]) snprintf(last_err, sizeof last_err, "HDF5 gave no detail");
    noted_err[0] = '\0';
    return last_err;
}

int h5u_exists(hid_t loc, const char *path) {
    char buf[1024];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) return 0;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char c = buf[i];
        buf[i] = '\0';
        int ok =
            H5Lexists(loc, buf, H5P_DEFAULT) > 0 && H5Oexists_by_name(loc, buf, H5P_DEFAULT) > 0;
        buf[i] = c;
        if (!ok) return 0;
    }
    return 1;
}

static H5I_type_t obj_type(hid_t loc, const char *path) {
    if (!h5u_exists(loc, path)) return H5I_BADID;
    hid_t o = H5Oopen(loc, path, H5P_DEFAULT);
    if (o < 0) return H5I_BADID;
    H5I_type_t t = H5Iget_type(o);
    H5Oclose(o);
    return t;
}

int h5u_is_group(hid_t loc, const char *path) {
    return obj_type(loc, path) == H5I_GROUP;
}
int h5u_is_dataset(hid_t loc, const char *path) {
    return obj_type(loc, path) == H5I_DATASET;
}
int h5u_has_attr(hid_t obj, const char *name) {
    return H5Aexists(obj, name) > 0;
}

static void trim_fixed(char *s, size_t size, H5T_str_t pad) {
    size_t len = strnlen(s, size);
    if (pad == H5T_STR_SPACEPAD)
        while (len > 0 && s[len - 1] == ' ') len--;
    s[len] = '\0';
}

/* Reads n strings from an attribute or dataset with file type ftype. */
static int read_string_values(hid_t obj, int is_attr, hid_t ftype, hid_t space, int64_t n,
                              char ***out) {
    char **res = av_calloc((size_t)n, sizeof *res);
    int rc = -1;
    if (H5Tis_variable_str(ftype) > 0) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(ftype));
        char **tmp = av_calloc((size_t)n, sizeof *tmp);
        herr_t st =
            is_attr ? H5Aread(obj, mt, tmp) : H5Dread(obj, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, tmp);
        if (st >= 0) {
            for (int64_t i = 0; i < n; i++) res[i] = av_strdup(tmp[i] ? tmp[i] : "");
            H5Dvlen_reclaim(mt, space, H5P_DEFAULT, tmp);
            rc = 0;
        }
        free(tmp);
        H5Tclose(mt);
    } else {
        size_t size = H5Tget_size(ftype);
        H5T_str_t pad = H5Tget_strpad(ftype);
        hid_t mt = H5Tcopy(ftype);
        char *tmp = av_calloc((size_t)n * size + 1, 1);
        herr_t st =
            is_attr ? H5Aread(obj, mt, tmp) : H5Dread(obj, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, tmp);
        if (st >= 0) {
            char *one = av_malloc(size + 1);
            for (int64_t i = 0; i < n; i++) {
                memcpy(one, tmp + (size_t)i * size, size);
                one[size] = '\0';
                trim_fixed(one, size, pad);
                res[i] = av_strdup(one);
            }
            free(one);
            rc = 0;
        }
        free(tmp);
        H5Tclose(mt);
    }
    if (rc) {
        av_free_strings(res, n);
        return -1;
    }
    *out = res;
    return 0;
}

char *h5u_attr_string(hid_t obj, const char *name) {
    if (H5Aexists(obj, name) <= 0) return NULL;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return NULL;
    hid_t t = H5Aget_type(a), s = H5Aget_space(a);
    char *res = NULL;
    int64_t n = H5Sget_simple_extent_npoints(s);
    if (H5Tget_class(t) == H5T_STRING && n >= 1) {
        char **v = NULL;
        if (read_string_values(a, 1, t, s, n, &v) == 0) {
            res = av_strdup(v[0]);
            av_free_strings(v, n);
        }
    }
    H5Sclose(s);
    H5Tclose(t);
    H5Aclose(a);
    return res;
}

int h5u_attr_strings(hid_t obj, const char *name, int64_t *n, char ***out) {
    *n = 0;
    *out = NULL;
    if (H5Aexists(obj, name) <= 0) return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t t = H5Aget_type(a), s = H5Aget_space(a);
    int64_t np = H5Sget_simple_extent_npoints(s);
    int rc = -1;
    if (H5Tget_class(t) == H5T_STRING) {
        if (np == 0 || read_string_values(a, 1, t, s, np, out) == 0) {
            *n = np;
            rc = 0;
        }
    } else if (np == 0) {
        rc = 0;
    }
    H5Sclose(s);
    H5Tclose(t);
    H5Aclose(a);
    return rc;
}

int h5u_attr_ints(hid_t obj, const char *name, int64_t *vals, int max) {
    if (H5Aexists(obj, name) <= 0) return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t t = H5Aget_type(a), s = H5Aget_space(a);
    int64_t np = H5Sget_simple_extent_npoints(s);
    int rc = -1;
    H5T_class_t c = H5Tget_class(t);
    if ((c == H5T_INTEGER || c == H5T_FLOAT) && np >= 1 && np <= 64) {
        int64_t tmp[64];
        if (H5Aread(a, H5T_NATIVE_INT64, tmp) >= 0) {
            rc = (int)(np < max ? np : max);
            for (int i = 0; i < rc; i++) vals[i] = tmp[i];
        }
    }
    H5Sclose(s);
    H5Tclose(t);
    H5Aclose(a);
    return rc;
}

int h5u_dims(hid_t dset, int64_t dims[2]) {
    hid_t s = H5Dget_space(dset);
    if (s < 0) return -1;
    int r = H5Sget_simple_extent_ndims(s);
    hsize_t d[H5S_MAX_RANK];
    dims[0] = dims[1] = 0;
    if (r >= 0 && r <= 2) {
        H5Sget_simple_extent_dims(s, d, NULL);
        for (int i = 0; i < r; i++) dims[i] = (int64_t)d[i];
        if (r == 0) dims[0] = 1;
    } else {
        r = -1;
    }
    H5Sclose(s);
    return r;
}

int h5u_read_strings(hid_t dset, int64_t *n, char ***out) {
    hid_t t = H5Dget_type(dset), s = H5Dget_space(dset);
    int rc = -1;
    int64_t np = H5Sget_simple_extent_npoints(s);
    /* a corrupt or crafted dataspace can declare any number of strings at no cost (HDF5
     * returns fill values for what is not stored), and n pointers are allocated first:
     * the declared size (16 bytes per vlen string, its heap ID) must fit what is stored,
     * allowing for compression (deflate: at most ~1032:1) and 1 MiB */
    size_t es = H5Tis_variable_str(t) > 0 ? 16 : H5Tget_size(t);
    double declared = (double)np * (double)(es ? es : 1);
    if (declared > 1100.0 * (double)H5Dget_storage_size(dset) + (double)(1 << 20)) np = -1;
    if (H5Tget_class(t) == H5T_STRING && np >= 0) {
        if (np == 0) {
            *out = av_calloc(1, sizeof(char *));
            rc = 0;
        } else {
            rc = read_string_values(dset, 0, t, s, np, out);
        }
        if (rc == 0) *n = np;
    }
    H5Sclose(s);
    H5Tclose(t);
    return rc;
}

int h5u_read_slab(hid_t dset, hid_t mem_type, int64_t lo, int64_t count, void *buf) {
    if (count <= 0) return 0;
    hid_t fs = H5Dget_space(dset);
    hsize_t start = (hsize_t)lo, cnt = (hsize_t)count;
    int rc = -1;
    if (H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &cnt, NULL) >= 0) {
        hid_t ms = H5Screate_simple(1, &cnt, NULL);
        rc = H5Dread(dset, mem_type, ms, fs, H5P_DEFAULT, buf) < 0 ? -1 : 0;
        if (rc) note_error();
        H5Sclose(ms);
    }
    H5Sclose(fs);
    return rc;
}

/* The chunk length in elements where dset is 1-D, chunked, its filters deflate alone or
 * shuffle then deflate (h5py's shuffle=True; *shuffled says which) and its stored type
 * exactly mem_type (no conversion); 0 otherwise. */
static int64_t deflate_chunk_len(hid_t dset, hid_t mem_type, int *shuffled) {
    int64_t len = 0;
    hid_t dcpl = H5Dget_create_plist(dset), ft = H5Dget_type(dset);
    hsize_t dim = 0;
    int nf = dcpl >= 0 ? H5Pget_nfilters(dcpl) : -1;
    if (dcpl >= 0 && ft >= 0 && H5Pget_layout(dcpl) == H5D_CHUNKED &&
        H5Pget_chunk(dcpl, 1, &dim) == 1 && (nf == 1 || nf == 2) && H5Tequal(ft, mem_type) > 0) {
        H5Z_filter_t f[2];
        for (int i = 0; i < nf; i++) {
            unsigned flags, cd[8], config;
            size_t ncd = 8;
            char name[64];
            f[i] = H5Pget_filter2(dcpl, (unsigned)i, &flags, &ncd, cd, sizeof name, name, &config);
        }
        *shuffled = nf == 2;
        if (f[nf - 1] == H5Z_FILTER_DEFLATE && (nf == 1 || f[0] == H5Z_FILTER_SHUFFLE))
            len = (int64_t)dim;
    }
    if (ft >= 0) H5Tclose(ft);
    if (dcpl >= 0) H5Pclose(dcpl);
    return len;
}

/* Elements [i0, i1) of a byte-shuffled chunk of C elements of es bytes (byte k of element
 * i at src[k C + i]) into dst, element by element. */
static void unshuffle(const unsigned char *src, int64_t C, size_t es, int64_t i0, int64_t i1,
                      unsigned char *dst) {
    for (size_t k = 0; k < es; k++)
        for (int64_t i = i0; i < i1; i++) dst[(size_t)(i - i0) * es + k] = src[(int64_t)k * C + i];
}

static int64_t inflated_total; /* chunks inflated by h5u_read_slab_inflate (for tests) */

int64_t h5u_inflated_chunks(void) {
    return __atomic_load_n(&inflated_total, __ATOMIC_RELAXED);
}

/* Raw chunks and their sizes, filter masks and inflated copies, for a batch of chunks. */
typedef struct {
    unsigned char **raw, *out;
    size_t *cap, *len;
    uint32_t *mask;
} ChunkBatch;

/* Chunks [k0, k0 + nb) of C elements of es bytes read raw (HDF5 is not thread-safe: one
 * thread), then inflated and their overlap with [lo, lo + count) copied to buf on the
 * team. raw[q] grows to fit (cap[q] bytes); out holds nb inflated chunks. */
static int inflate_chunks(hid_t dset, int64_t k0, int64_t nb, int64_t C, size_t es, int shuffled,
                          int64_t lo, int64_t count, const ChunkBatch *cbt, void *buf) {
    unsigned char **raw = cbt->raw, *out = cbt->out;
    size_t cb = (size_t)C * es, *cap = cbt->cap, *len = cbt->len;
    uint32_t *mask = cbt->mask;
    for (int64_t q = 0; q < nb; q++) {
        hsize_t off = (hsize_t)((k0 + q) * C), sz = 0;
        if (H5Dget_chunk_storage_size(dset, &off, &sz) < 0 || sz == 0) return -1;
        if (sz > cap[q]) {
            free(raw[q]);
            raw[q] = av_malloc((size_t)sz);
            cap[q] = (size_t)sz;
        }
        if (H5Dread_chunk(dset, H5P_DEFAULT, &off, &mask[q], raw[q]) < 0) return -1;
        len[q] = (size_t)sz;
    }
    int bad = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(| : bad)
    for (int64_t q = 0; q < nb; q++) {
        /* filter mask bit i: pipeline filter i skipped for this chunk (deflate is the last) */
        const unsigned char *src = raw[q];
        if (mask[q] & (shuffled ? 2u : 1u)) { /* stored without deflate */
            bad |= len[q] != cb;
        } else {
            uLongf n = (uLongf)cb;
            bad |= uncompress(out + q * cb, &n, raw[q], (uLong)len[q]) != Z_OK || n != cb;
            src = out + q * cb;
        }
        int64_t c0 = (k0 + q) * C, a = lo > c0 ? lo : c0;
        int64_t b = lo + count < c0 + C ? lo + count : c0 + C;
        unsigned char *dst = (unsigned char *)buf + (size_t)(a - lo) * es;
        if (bad || b <= a) continue;
        if (shuffled && !(mask[q] & 1u))
            unshuffle(src, C, es, a - c0, b - c0, dst);
        else
            memcpy(dst, src + (size_t)(a - c0) * es, (size_t)(b - a) * es);
    }
    if (!bad) __atomic_add_fetch(&inflated_total, nb, __ATOMIC_RELAXED);
    return bad ? -1 : 0;
}

int h5u_read_slab_inflate(hid_t dset, hid_t mem_type, int64_t lo, int64_t count, void *buf) {
    int shuffled = 0;
    int64_t C = count > 0 ? deflate_chunk_len(dset, mem_type, &shuffled) : 0;
    if (C <= 0 || count < 2 * C || omp_get_max_threads() < 2)
        return h5u_read_slab(dset, mem_type, lo, count, buf);
    size_t es = H5Tget_size(mem_type);
    int64_t k0 = lo / C, k1 = (lo + count - 1) / C, batch = 4 * (int64_t)omp_get_max_threads();
    ChunkBatch cbt = {
        av_calloc((size_t)batch, sizeof(unsigned char *)),
        av_malloc((size_t)batch * (size_t)C * es), av_calloc((size_t)batch, sizeof(size_t)),
        av_calloc((size_t)batch, sizeof(size_t)), av_calloc((size_t)batch, sizeof(uint32_t))};
    int rc = 0;
    for (int64_t k = k0; k <= k1 && !rc; k += batch) {
        int64_t nb = k1 - k + 1 < batch ? k1 - k + 1 : batch;
        rc = inflate_chunks(dset, k, nb, C, es, shuffled, lo, count, &cbt, buf);
    }
    for (int64_t q = 0; q < batch; q++) free(cbt.raw[q]);
    free(cbt.raw), free(cbt.out), free(cbt.cap), free(cbt.len), free(cbt.mask);
    /* anything unexpected: HDF5's own read, which also reports a damaged file */
    return rc ? h5u_read_slab(dset, mem_type, lo, count, buf) : 0;
}

int h5u_read_doubles(hid_t dset, int64_t n, double *out) {
    hid_t t = H5Dget_type(dset);
    H5T_class_t c = H5Tget_class(t);
    int rc = -1;
    if (c == H5T_INTEGER || c == H5T_FLOAT) {
        rc = n == 0 || H5Dread(dset, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) >= 0
                 ? 0
                 : -1;
    } else if (c == H5T_ENUM) { /* h5py bools: enum over a small integer base type */
        hid_t base = H5Tget_super(t);
        size_t sz = H5Tget_size(t);
        int sgn = H5Tget_sign(base) == H5T_SGN_2;
        hid_t mt = H5Tget_native_type(t, H5T_DIR_DEFAULT);
        unsigned char *raw = av_malloc((size_t)n * sz + 1);
        if (n == 0 || H5Dread(dset, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) >= 0) {
            rc = 0;
            for (int64_t i = 0; i < n; i++) {
                const unsigned char *p = raw + (size_t)i * sz;
                int64_t v = 0;
                if (sz == 1)
                    v = sgn ? (int64_t)(int8_t)p[0] : (int64_t)p[0];
                else if (sz == 2) {
                    int16_t x;
                    memcpy(&x, p, 2);
                    v = sgn ? (int64_t)x : (int64_t)(uint16_t)x;
                } else if (sz == 4) {
                    int32_t x;
                    memcpy(&x, p, 4);
                    v = sgn ? (int64_t)x : (int64_t)(uint32_t)x;
                } else if (sz == 8) {
                    memcpy(&v, p, 8);
                } else {
                    rc = -1;
                }
                out[i] = (double)v;
            }
        }
        free(raw);
        H5Tclose(mt);
        H5Tclose(base);
    }
    H5Tclose(t);
    return rc;
}

static const char *filter_name(H5Z_filter_t id) {
    switch (id) {
    case 1:
        return "deflate/gzip";
    case 2:
        return "shuffle";
    case 3:
        return "fletcher32";
    case 4:
        return "szip";
    case 307:
        return "bzip2";
    case 32000:
        return "lzf";
    case 32001:
        return "blosc";
    case 32004:
        return "lz4";
    case 32008:
        return "bitshuffle";
    case 32015:
        return "zstd";
    case 32017:
        return "sz";
    case 32026:
        return "blosc2";
    default:
        return NULL;
    }
}

int h5u_check_filters(hid_t dset, const char *file, const char *path, char *err) {
    hid_t dcpl = H5Dget_create_plist(dset);
    if (dcpl < 0) return 0;
    int nf = H5Pget_nfilters(dcpl), rc = 0;
    for (int i = 0; i < nf && !rc; i++) {
        unsigned flags = 0, cfg = 0;
        size_t nelm = 0;
        char name[128] = "";
        H5Z_filter_t id =
            H5Pget_filter2(dcpl, (unsigned)i, &flags, &nelm, NULL, sizeof name, name, &cfg);
        if (id < 0) continue;
        unsigned info = 0;
        int ok = H5Zfilter_avail(id) > 0 && H5Zget_filter_info(id, &info) >= 0 &&
                 (info & H5Z_FILTER_CONFIG_DECODE_ENABLED);
        if (!ok) {
            const char *known = filter_name(id);
            rc = av_err(err,
                        "%s: dataset %s is compressed with HDF5 filter %d (%s), which this build "
                        "cannot decode; rewrite it with gzip, e.g. in Python: import hdf5plugin, "
                        "anndata; anndata.read_h5ad(f).write_h5ad(g, compression='gzip')",
                        file, path, (int)id, known ? known : (name[0] ? name : "unknown"));
        }
    }
    H5Pclose(dcpl);
    return rc;
}

const char *h5u_type_name(hid_t dset, char *buf, size_t len) {
    hid_t t = H5Dget_type(dset);
    H5T_class_t c = H5Tget_class(t);
    size_t sz = H5Tget_size(t);
    switch (c) {
    case H5T_INTEGER:
        snprintf(buf, len, "%sint%zu", H5Tget_sign(t) == H5T_SGN_NONE ? "u" : "", sz * 8);
        break;
    case H5T_FLOAT:
        snprintf(buf, len, "float%zu", sz * 8);
        break;
    case H5T_STRING:
        snprintf(buf, len, "%s", H5Tis_variable_str(t) > 0 ? "string" : "fixed string");
        break;
    case H5T_ENUM:
        snprintf(buf, len, "%s", H5Tget_nmembers(t) == 2 ? "bool" : "enum");
        break;
    default:
        snprintf(buf, len, "other");
        break;
    }
    H5Tclose(t);
    return buf;
}

/* Category labels: strings as they are, numbers printed ("0", "1", "2.5"). */
static int read_categories(hid_t dset, int64_t *n, char ***out) {
    hid_t t = H5Dget_type(dset);
    H5T_class_t c = H5Tget_class(t);
    H5Tclose(t);
    if (c == H5T_STRING) return h5u_read_strings(dset, n, out);
    int64_t d[2];
    if (h5u_dims(dset, d) != 1) return -1;
    double *v = av_malloc((size_t)(d[0] ? d[0] : 1) * sizeof *v);
    if (h5u_read_doubles(dset, d[0], v)) {
        free(v);
        return -1;
    }
    char **s = av_calloc((size_t)(d[0] ? d[0] : 1), sizeof *s);
    for (int64_t i = 0; i < d[0]; i++) {
        char b[64];
        if (v[i] == floor(v[i]) && fabs(v[i]) < 1e15)
            snprintf(b, sizeof b, "%lld", (long long)v[i]);
        else
            snprintf(b, sizeof b, "%.15g", v[i]);
        s[i] = av_strdup(b);
    }
    free(v);
    *n = d[0];
    *out = s;
    return 0;
}

static int read_codes(hid_t dset, int64_t n, int32_t **codes) {
    int64_t d[2];
    int r = h5u_dims(dset, d);
    /* n codes as (n), (n, 1) or (1, n); no product (d[0] * d[1] overflowed for crafted dims) */
    int ok = r == 1 ? d[0] == n
                    : r == 2 && ((d[0] == n && d[1] == 1) || (d[0] == 1 && d[1] == n) ||
                                 (n == 0 && (d[0] == 0 || d[1] == 0)));
    if (!ok) return -1;
    *codes = av_malloc((size_t)(n ? n : 1) * sizeof(int32_t));
    if (n && H5Dread(dset, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, *codes) < 0) {
        free(*codes);
        *codes = NULL;
        return -1;
    }
    return 0;
}

static int column_length_ok(hid_t dset, int64_t n) {
    int64_t d[2];
    int r = h5u_dims(dset, d);
    if (r == 1) return d[0] == n;
    if (r == 2) return d[0] == n && d[1] == 1;
    return 0;
}

static int finish_categorical(AvColumn *out, int64_t n, const char *file, const char *where,
                              const char *key, char *err) {
    for (int64_t i = 0; i < n; i++)
        if (out->codes[i] < -1 || out->codes[i] >= out->n_categories)
            return av_err(err, "%s: %s/%s: code %d at row %lld is outside [-1, %d)", file, where,
                          key, out->codes[i], (long long)i, out->n_categories);
    return 0;
}

/* The length of a 1-D or n x 1 dataset; -1 otherwise. */
static int64_t vector_length(hid_t loc, const char *path) {
    if (!h5u_is_dataset(loc, path)) return -1;
    hid_t d = H5Dopen2(loc, path, H5P_DEFAULT);
    int64_t dims[2];
    int r = d >= 0 ? h5u_dims(d, dims) : -1;
    if (d >= 0) H5Dclose(d);
    return r == 1 || (r == 2 && dims[1] == 1) ? dims[0] : -1;
}

int64_t h5u_column_length(hid_t loc, const char *path) {
    if (!h5u_is_group(loc, path)) return vector_length(loc, path);
    hid_t g = H5Gopen2(loc, path, H5P_DEFAULT);
    char *enc = g >= 0 ? h5u_attr_string(g, "encoding-type") : NULL;
    int64_t n = -1;
    if (enc && !strcmp(enc, "categorical"))
        n = vector_length(g, "codes");
    else if (enc && !strncmp(enc, "nullable-", 9))
        n = vector_length(g, "values");
    free(enc);
    if (g >= 0) H5Gclose(g);
    return n;
}

int h5u_read_column(hid_t grp, const char *key, int64_t n, AvColumn *out, const char *file,
                    const char *where, char *err) {
    memset(out, 0, sizeof *out);
    out->name = av_strdup(key);
    out->n = n;
    if (!h5u_exists(grp, key)) {
        av_column_free(out);
        return av_err(err, "%s: %s/%s not found", file, where, key);
    }
    hid_t o = H5Oopen(grp, key, H5P_DEFAULT);
    int rc = 0;
    if (o < 0) {
        rc = av_err(err, "%s: %s/%s: cannot open (%s)", file, where, key, h5u_last_error());
    } else if (H5Iget_type(o) == H5I_GROUP) {
        char *enc = h5u_attr_string(o, "encoding-type");
        if (enc && !strcmp(enc, "categorical")) {
            out->kind = AV_COL_CATEGORICAL;
            hid_t dc = h5u_is_dataset(o, "codes") ? H5Dopen2(o, "codes", H5P_DEFAULT) : -1;
            hid_t dk =
                h5u_is_dataset(o, "categories") ? H5Dopen2(o, "categories", H5P_DEFAULT) : -1;
            int64_t nc = 0;
            if (dc < 0 || dk < 0)
                rc = av_err(err, "%s: %s/%s: categorical without codes/categories datasets", file,
                            where, key);
            else if (read_codes(dc, n, &out->codes))
                rc = av_err(err, "%s: %s/%s/codes: expected %lld integer codes (%s)", file, where,
                            key, (long long)n, h5u_last_error());
            else if (read_categories(dk, &nc, &out->categories))
                rc = av_err(err, "%s: %s/%s/categories: expected strings or numbers (%s)", file,
                            where, key, h5u_last_error());
            else {
                out->n_categories = (int32_t)nc;
                rc = finish_categorical(out, n, file, where, key, err);
            }
            if (dc >= 0) H5Dclose(dc);
            if (dk >= 0) H5Dclose(dk);
        } else if (enc && (!strcmp(enc, "nullable-integer") || !strcmp(enc, "nullable-boolean") ||
                           !strcmp(enc, "nullable-string-array"))) {
            int is_str = !strcmp(enc, "nullable-string-array");
            hid_t dv = h5u_is_dataset(o, "values") ? H5Dopen2(o, "values", H5P_DEFAULT) : -1;
            hid_t dm = h5u_is_dataset(o, "mask") ? H5Dopen2(o, "mask", H5P_DEFAULT) : -1;
            double *mask = av_malloc((size_t)(n ? n : 1) * sizeof *mask);
            int64_t ns = 0;
            if (dv < 0 || dm < 0 || !column_length_ok(dv, n) || !column_length_ok(dm, n) ||
                h5u_read_doubles(dm, n, mask)) {
                rc = av_err(err, "%s: %s/%s: %s needs values and mask of length %lld", file, where,
                            key, enc, (long long)n);
            } else if (is_str) {
                out->kind = AV_COL_STRING;
                if (h5u_read_strings(dv, &ns, &out->strings) || ns != n)
                    rc = av_err(err, "%s: %s/%s/values: expected %lld strings", file, where, key,
                                (long long)n);
                else
                    for (int64_t i = 0; i < n; i++)
                        if (mask[i] != 0) {
                            free(out->strings[i]);
                            out->strings[i] = av_strdup("NA");
                        }
            } else {
                out->kind = AV_COL_NUMERIC;
                out->values = av_malloc((size_t)(n ? n : 1) * sizeof(double));
                if (h5u_read_doubles(dv, n, out->values))
                    rc = av_err(err, "%s: %s/%s/values: expected %lld numbers", file, where, key,
                                (long long)n);
                else
                    for (int64_t i = 0; i < n; i++)
                        if (mask[i] != 0) out->values[i] = NAN;
            }
            free(mask);
            if (dv >= 0) H5Dclose(dv);
            if (dm >= 0) H5Dclose(dm);
        } else {
            rc = av_err(err,
                        "%s: %s/%s: unsupported column encoding '%s' (expected categorical, "
                        "nullable or a 1-D dataset)",
                        file, where, key, enc ? enc : "none");
        }
        free(enc);
    } else if (H5Iget_type(o) == H5I_DATASET) {
        hid_t t = H5Dget_type(o);
        H5T_class_t c = H5Tget_class(t);
        H5Tclose(t);
        int legacy_cat = 0;
        if (H5Aexists(o, "categories") > 0) {
            hid_t a = H5Aopen(o, "categories", H5P_DEFAULT);
            hid_t at = H5Aget_type(a);
            legacy_cat = H5Tget_class(at) == H5T_REFERENCE;
            H5Tclose(at);
            if (legacy_cat) {
                hobj_ref_t ref;
                out->kind = AV_COL_CATEGORICAL;
                hid_t dk = -1;
                int64_t nc = 0;
                if (H5Aread(a, H5T_STD_REF_OBJ, &ref) < 0 ||
                    (dk = H5Rdereference2(o, H5P_DEFAULT, H5R_OBJECT, &ref)) < 0)
                    rc = av_err(err,
                                "%s: %s/%s: cannot follow the 'categories' object reference "
                                "(legacy anndata 0.7 categorical)",
                                file, where, key);
                else if (read_codes(o, n, &out->codes))
                    rc = av_err(err, "%s: %s/%s: expected %lld integer codes", file, where, key,
                                (long long)n);
                else if (read_categories(dk, &nc, &out->categories))
                    rc = av_err(err, "%s: %s/%s: referenced categories are not strings or numbers",
                                file, where, key);
                else {
                    out->n_categories = (int32_t)nc;
                    rc = finish_categorical(out, n, file, where, key, err);
                }
                if (dk >= 0) H5Oclose(dk);
            }
            H5Aclose(a);
        }
        if (!legacy_cat) {
            if (!column_length_ok(o, n)) {
                int64_t d[2] = {0, 0};
                int r = h5u_dims(o, d);
                char shp[64];
                if (r == 2)
                    snprintf(shp, sizeof shp, "(%lld, %lld)", (long long)d[0], (long long)d[1]);
                else
                    snprintf(shp, sizeof shp, "(%lld)", (long long)d[0]);
                rc = av_err(err, "%s: %s/%s: expected a column of length %lld, found shape %s",
                            file, where, key, (long long)n, shp);
            } else if (c == H5T_STRING) {
                out->kind = AV_COL_STRING;
                int64_t ns = 0;
                if (h5u_read_strings(o, &ns, &out->strings) || ns != n)
                    rc = av_err(err, "%s: %s/%s: cannot read %lld strings (%s)", file, where, key,
                                (long long)n, h5u_last_error());
            } else if (c == H5T_INTEGER || c == H5T_FLOAT || c == H5T_ENUM) {
                out->kind = AV_COL_NUMERIC;
                out->values = av_malloc((size_t)(n ? n : 1) * sizeof(double));
                if (h5u_read_doubles(o, n, out->values))
                    rc = av_err(err, "%s: %s/%s: cannot read %lld numbers (%s)", file, where, key,
                                (long long)n, h5u_last_error());
            } else {
                rc = av_err(err,
                            "%s: %s/%s: unsupported column type (expected strings, numbers "
                            "or a categorical)",
                            file, where, key);
            }
        }
    } else {
        rc = av_err(err, "%s: %s/%s: not a dataset or group", file, where, key);
    }
    if (o >= 0) H5Oclose(o);
    if (rc) av_column_free(out);
    return rc;
}
