/* torch.save zip archives: writer and reader; see torch_zip.h. */
#include "io/torch_zip.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "io/replace.h"
#include "src/util.h"

#define ZIP_ALIGN 64

static uint32_t crc_of(const void *data, size_t n) {
    uLong crc = crc32(0L, Z_NULL, 0);
    const Bytef *p = data;
    while (n) {
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = crc32(crc, p, chunk);
        p += chunk;
        n -= chunk;
    }
    return (uint32_t)crc;
}

static void le16(unsigned char *b, unsigned v) {
    b[0] = (unsigned char)v;
    b[1] = (unsigned char)(v >> 8);
}
static void le32(unsigned char *b, uint32_t v) {
    for (int k = 0; k < 4; k++) b[k] = (unsigned char)(v >> (8 * k));
}
static uint32_t rd16(const unsigned char *b) {
    return (uint32_t)b[0] | ((uint32_t)b[1] << 8);
}
static uint32_t rd32(const unsigned char *b) {
    return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
}
static uint64_t rd64(const unsigned char *b) {
    return (uint64_t)rd32(b) | ((uint64_t)rd32(b + 4) << 32);
}

/* ---------------------------------------------------------------- writer */

typedef struct {
    char *name;
    uint32_t crc, size, offset;
} ZEntry;

typedef struct {
    FILE *f;
    uint64_t pos;
    int n;
    ZEntry *e;
    int failed;
} ZipW;

static void zw(ZipW *z, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, z->f) != n) z->failed = 1;
    z->pos += n;
}

static int zip_add(ZipW *z, const char *name, const void *data, size_t n, char *err) {
    size_t nl = strlen(name);
    uint64_t head = z->pos + 30 + nl;
    size_t pad = (size_t)((ZIP_ALIGN - head % ZIP_ALIGN) % ZIP_ALIGN);
    if (pad && pad < 4) pad += ZIP_ALIGN;
    if (z->pos + 30 + nl + pad + n >= 0xFFFFFFFFull || n >= 0xFFFFFFFFull || z->n >= 65535)
        return av_err(err, "model too large for a zip archive without zip64 (over 4 GiB)");
    z->e = av_realloc(z->e, sizeof(ZEntry) * (size_t)(z->n + 1));
    ZEntry *e = &z->e[z->n++];
    e->name = av_strdup(name);
    e->crc = crc_of(data, n);
    e->size = (uint32_t)n;
    e->offset = (uint32_t)z->pos;
    unsigned char h[30] = {0};
    le32(h, 0x04034b50);
    le16(h + 4, 20);    /* version needed */
    le16(h + 6, 0);     /* flags */
    le16(h + 8, 0);     /* stored */
    le16(h + 10, 0);    /* time */
    le16(h + 12, 0x21); /* 1980-01-01 */
    le32(h + 14, e->crc);
    le32(h + 18, e->size);
    le32(h + 22, e->size);
    le16(h + 26, (unsigned)nl);
    le16(h + 28, (unsigned)pad);
    zw(z, h, 30);
    zw(z, name, nl);
    if (pad) { /* PyTorch's alignment padding: extra field "FB", then 'Z's */
        unsigned char x[4 + 2 * ZIP_ALIGN];
        x[0] = 'F';
        x[1] = 'B';
        le16(x + 2, (unsigned)(pad - 4));
        memset(x + 4, 'Z', pad - 4);
        zw(z, x, pad);
    }
    zw(z, data, n);
    return 0;
}

static void zip_finish(ZipW *z) {
    uint64_t cd = z->pos;
    for (int i = 0; i < z->n; i++) {
        ZEntry *e = &z->e[i];
        size_t nl = strlen(e->name);
        unsigned char h[46] = {0};
        le32(h, 0x02014b50);
        le16(h + 4, 20); /* made by */
        le16(h + 6, 20); /* needed */
        le16(h + 14, 0x21);
        le32(h + 16, e->crc);
        le32(h + 20, e->size);
        le32(h + 24, e->size);
        le16(h + 28, (unsigned)nl);
        le32(h + 42, e->offset);
        zw(z, h, 46);
        zw(z, e->name, nl);
    }
    unsigned char q[22] = {0};
    le32(q, 0x06054b50);
    le16(q + 8, (unsigned)z->n);
    le16(q + 10, (unsigned)z->n);
    le32(q + 12, (uint32_t)(z->pos - cd));
    le32(q + 16, (uint32_t)cd);
    zw(z, q, 22);
}

int av_torch_save(const char *path, const char *name, const unsigned char *pkl, size_t pkl_len,
                  int n_storages, const AvTorchStorage *storages, char *err) {
    AvReplace r;
    if (av_replace_begin(&r, path, err)) return -1;
    ZipW z = {0};
    z.f = fopen(r.tmp, "wb");
    if (!z.f) {
        av_err(err, "cannot create '%s'", r.tmp);
        av_replace_abort(&r);
        return -1;
    }
    char entry[512];
    int rc = 0;
#define ADD(suffix, data, n)                                                                       \
    do {                                                                                           \
        snprintf(entry, sizeof entry, "%s/%s", name, suffix);                                      \
        if (!rc) rc = zip_add(&z, entry, data, n, err);                                            \
    } while (0)
    ADD("data.pkl", pkl, pkl_len);
    ADD(".format_version", "1", 1);
    ADD(".storage_alignment", "64", 2);
    ADD("byteorder", "little", 6);
    for (int i = 0; i < n_storages; i++) {
        char key[32];
        snprintf(key, sizeof key, "data/%d", i);
        ADD(key, storages[i].data, storages[i].bytes);
    }
    ADD("version", "3\n", 2);
    /* torch writes a random decimal id here; ours is derived from the pickle */
    char sid[48];
    uint32_t c = crc_of(pkl, pkl_len);
    snprintf(sid, sizeof sid, "%010u%010u%010u%010u", c, c ^ 0x5bd1e995u, (unsigned)pkl_len,
             (unsigned)n_storages);
    ADD(".data/serialization_id", sid, 40);
#undef ADD
    if (!rc) zip_finish(&z);
    if (fclose(z.f)) z.failed = 1;
    if (!rc && z.failed) rc = av_err(err, "cannot write '%s' (disk full?)", path);
    if (rc)
        av_replace_abort(&r);
    else
        rc = av_replace_commit(&r, err);
    for (int i = 0; i < z.n; i++) free(z.e[i].name);
    free(z.e);
    return rc;
}

/* ---------------------------------------------------------------- reader */

typedef struct {
    char *name;
    int method;
    uint64_t csize, usize, data_off;
    uint32_t crc;
    unsigned char *inflated; /* deflated entries, once read */
} REntry;

struct AvTorchFile {
    unsigned char *buf;
    uint64_t size;
    int n;
    REntry *e;
    char prefix[256];
    AvPickle *pickle;
};

static int read_whole(const char *path, unsigned char **buf, uint64_t *size, char *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return av_err(err, "cannot open '%s'", path);
    if (fseeko(f, 0, SEEK_END)) {
        fclose(f);
        return av_err(err, "cannot read '%s'", path);
    }
    off_t n = ftello(f);
    rewind(f);
    *buf = av_malloc((size_t)n + 1);
    if (n < 0 || fread(*buf, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(*buf);
        *buf = NULL;
        return av_err(err, "cannot read '%s'", path);
    }
    fclose(f);
    *size = (uint64_t)n;
    return 0;
}

static int parse_zip(AvTorchFile *t, const char *path, char *err) {
    const unsigned char *b = t->buf;
    uint64_t n = t->size;
    if (n < 22) return av_err(err, "%s: not a zip archive (torch.save file)", path);
    int64_t eocd = -1;
    for (int64_t i = (int64_t)n - 22; i >= 0 && i >= (int64_t)n - 22 - 65535; i--)
        if (rd32(b + i) == 0x06054b50) {
            eocd = i;
            break;
        }
    if (eocd < 0) return av_err(err, "%s: not a zip archive (torch.save file)", path);
    uint64_t count = rd16(b + eocd + 10), cd_size = rd32(b + eocd + 12),
             cd_off = rd32(b + eocd + 16);
    if (eocd >= 20 && rd32(b + eocd - 20) == 0x07064b50) { /* zip64 locator */
        uint64_t z64 = rd64(b + eocd - 20 + 8);
        if (z64 + 56 > n || rd32(b + z64) != 0x06064b50)
            return av_err(err, "%s: corrupt zip64 directory", path);
        count = rd64(b + z64 + 32);
        cd_size = rd64(b + z64 + 40);
        cd_off = rd64(b + z64 + 48);
    }
    if (cd_off > n || cd_size > n - cd_off || count > cd_size / 46)
        return av_err(err, "%s: corrupt zip directory", path);
    t->e = av_calloc((size_t)count + 1, sizeof(REntry));
    uint64_t p = cd_off;
    for (uint64_t i = 0; i < count; i++) {
        if (p + 46 > cd_off + cd_size || rd32(b + p) != 0x02014b50)
            return av_err(err, "%s: corrupt zip directory entry", path);
        REntry *e = &t->e[t->n++];
        uint32_t flags = rd16(b + p + 8);
        e->method = (int)rd16(b + p + 10);
        e->crc = rd32(b + p + 16);
        e->csize = rd32(b + p + 20);
        e->usize = rd32(b + p + 24);
        uint32_t nl = rd16(b + p + 28), xl = rd16(b + p + 30), cl = rd16(b + p + 32);
        uint64_t lho = rd32(b + p + 42);
        if (p + 46 + nl + xl + cl > cd_off + cd_size)
            return av_err(err, "%s: corrupt zip directory entry", path);
        if (flags & 1) return av_err(err, "%s: encrypted zip entries are not supported", path);
        e->name = av_malloc(nl + 1);
        memcpy(e->name, b + p + 46, nl);
        e->name[nl] = 0;
        const unsigned char *x = b + p + 46 + nl;
        for (uint32_t k = 0; k + 4 <= xl;) { /* zip64 extra: only the fields that overflowed */
            uint32_t id = rd16(x + k), len = rd16(x + k + 2);
            if (k + 4 + len > xl) break;
            if (id == 1) {
                const unsigned char *f = x + k + 4;
                uint32_t used = 0;
                if (e->usize == 0xFFFFFFFFu && used + 8 <= len)
                    e->usize = rd64(f + used), used += 8;
                if (e->csize == 0xFFFFFFFFu && used + 8 <= len)
                    e->csize = rd64(f + used), used += 8;
                if (lho == 0xFFFFFFFFu && used + 8 <= len) lho = rd64(f + used), used += 8;
            }
            k += 4 + len;
        }
        if (lho + 30 > n || rd32(b + lho) != 0x04034b50)
            return av_err(err, "%s: corrupt zip entry '%s'", path, e->name);
        e->data_off = lho + 30 + rd16(b + lho + 26) + rd16(b + lho + 28);
        if (e->data_off > n || e->csize > n - e->data_off)
            return av_err(err, "%s: truncated zip entry '%s'", path, e->name);
        if (e->method != 0 && e->method != 8)
            return av_err(err,
                          "%s: zip entry '%s' uses compression method %d (only stored and "
                          "deflate are supported)",
                          path, e->name, e->method);
        p += 46 + nl + xl + cl;
    }
    return 0;
}

static REntry *find_entry(AvTorchFile *t, const char *suffix) {
    char name[600];
    snprintf(name, sizeof name, "%s/%s", t->prefix, suffix);
    for (int i = 0; i < t->n; i++)
        if (!strcmp(t->e[i].name, name)) return &t->e[i];
    return NULL;
}

static const unsigned char *entry_data(AvTorchFile *t, REntry *e, char *err) {
    if (e->method == 0) {
        if (e->usize != e->csize) {
            av_err(err, "zip entry '%s': stored sizes differ", e->name);
            return NULL;
        }
        if (crc_of(t->buf + e->data_off, e->csize) != e->crc) {
            av_err(err, "zip entry '%s': CRC mismatch (corrupt file)", e->name);
            return NULL;
        }
        return t->buf + e->data_off;
    }
    if (!e->inflated) {
        unsigned char *out = av_malloc(e->usize + 1);
        z_stream s = {0};
        int ok = inflateInit2(&s, -15) == Z_OK;
        s.next_in = t->buf + e->data_off;
        s.avail_in = (uInt)e->csize;
        s.next_out = out;
        s.avail_out = (uInt)e->usize;
        ok = ok && e->csize < (1ull << 31) && e->usize < (1ull << 31) &&
             inflate(&s, Z_FINISH) == Z_STREAM_END && s.total_out == e->usize;
        inflateEnd(&s);
        if (!ok || crc_of(out, e->usize) != e->crc) {
            free(out);
            av_err(err, "zip entry '%s': cannot inflate (corrupt file)", e->name);
            return NULL;
        }
        e->inflated = out;
    }
    return e->inflated;
}

void av_torch_close(AvTorchFile *t) {
    if (!t) return;
    for (int i = 0; i < t->n; i++) {
        free(t->e[i].name);
        free(t->e[i].inflated);
    }
    free(t->e);
    free(t->buf);
    av_pickle_free(t->pickle);
    free(t);
}

AvTorchFile *av_torch_load(const char *path, AvPy **root, char *err) {
    AvTorchFile *t = av_calloc(1, sizeof *t);
    *root = NULL;
    if (read_whole(path, &t->buf, &t->size, err) || parse_zip(t, path, err)) goto fail;
    REntry *pk = NULL;
    for (int i = 0; i < t->n && !pk; i++) {
        const char *nm = t->e[i].name, *sl = strchr(nm, '/');
        if (sl && !strcmp(sl + 1, "data.pkl") && (size_t)(sl - nm) < sizeof t->prefix) {
            pk = &t->e[i];
            memcpy(t->prefix, nm, (size_t)(sl - nm));
            t->prefix[sl - nm] = 0;
        }
    }
    if (!pk) {
        if (t->size >= 2 && t->buf[0] == 0x80)
            av_err(err, "%s: a legacy (non-zip) torch.save file; re-save it with torch >= 1.6",
                   path);
        else
            av_err(err, "%s: zip archive without data.pkl (not a torch.save file)", path);
        goto fail;
    }
    REntry *bo = find_entry(t, "byteorder");
    if (bo) {
        const unsigned char *d = entry_data(t, bo, err);
        if (!d) goto fail;
        if (bo->usize != 6 || memcmp(d, "little", 6)) {
            av_err(err, "%s: big-endian tensor storages are not supported", path);
            goto fail;
        }
    }
    const unsigned char *pd = entry_data(t, pk, err);
    if (!pd) goto fail;
    char perr[AV_ERRLEN];
    t->pickle = av_pickle_load(pd, pk->usize, root, perr);
    if (!t->pickle) {
        av_err(err, "%s: %s", path, perr);
        goto fail;
    }
    return t;
fail:
    av_torch_close(t);
    *root = NULL;
    return NULL;
}

int64_t av_torch_numel(const AvPy *x) {
    if (!x || x->kind != AV_PY_TENSOR) return -1;
    int64_t n = 1;
    for (int k = 0; k < x->ndim; k++) n *= x->shape[k];
    return n;
}

static float half_to_float(uint16_t h) {
    uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 0x1F, m = h & 0x3FF, u;
    if (e == 0) {
        if (!m) {
            u = s;
        } else { /* subnormal */
            e = 127 - 15 + 1;
            while (!(m & 0x400)) {
                m <<= 1;
                e--;
            }
            u = s | (e << 23) | ((m & 0x3FF) << 13);
        }
    } else if (e == 31) {
        u = s | 0x7F800000u | (m << 13);
    } else {
        u = s | ((e + 127 - 15) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static float elem(const unsigned char *p, const char *dt) {
    if (!strcmp(dt, "f4")) {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    if (!strcmp(dt, "f8")) {
        double d;
        memcpy(&d, p, 8);
        return (float)d;
    }
    if (!strcmp(dt, "f2")) return half_to_float((uint16_t)rd16(p));
    if (!strcmp(dt, "bf2")) {
        uint32_t u = rd16(p) << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    if (!strcmp(dt, "i8")) return (float)(int64_t)rd64(p);
    if (!strcmp(dt, "i4")) return (float)(int32_t)rd32(p);
    if (!strcmp(dt, "i2")) return (float)(int16_t)rd16(p);
    if (!strcmp(dt, "i1")) return (float)(int8_t)p[0];
    return (float)p[0]; /* u1, b1 */
}

/* A filter (deflate at its best, 1032:1) shrinks data this much at most. */
#define MAX_DEFLATE_RATIO 1100

/* The storage entry of a tensor, its declared size checked against the bytes the archive
 * holds and the tensor's view against the storage, without inflating anything. */
static REntry *tensor_entry(AvTorchFile *t, const AvPy *x, char *err) {
    if (!x || x->kind != AV_PY_TENSOR) return av_err(err, "not a tensor"), NULL;
    const AvPy *s = x->storage;
    char key[300];
    snprintf(key, sizeof key, "data/%s", s->s);
    REntry *e = find_entry(t, key);
    if (!e) return av_err(err, "tensor storage '%s' missing from the archive", s->s), NULL;
    uint64_t most = e->method == 0 ? e->csize : e->csize * MAX_DEFLATE_RATIO;
    int64_t es = s->elsize;
    if (s->numel < 0 || es <= 0 || (uint64_t)s->numel > e->usize / (uint64_t)es || e->usize > most)
        return av_err(err, "tensor storage '%s' is shorter than its %lld elements", s->s,
                      (long long)s->numel),
               NULL;
    /* the largest element index reached must lie inside the storage */
    __int128 last = x->offset;
    int empty = 0;
    for (int k = 0; k < x->ndim; k++) {
        if (x->shape[k] < 0 || x->stride[k] < 0)
            return av_err(err, "negative tensor shape or stride"), NULL;
        if (x->shape[k]) last += (__int128)(x->shape[k] - 1) * x->stride[k];
        empty |= x->shape[k] == 0;
    }
    if (!empty && (x->offset < 0 || last >= s->numel))
        return av_err(err, "tensor view outside its storage '%s'", s->s), NULL;
    return e;
}

int av_torch_tensor_check(AvTorchFile *t, const AvPy *x, char *err) {
    return tensor_entry(t, x, err) ? 0 : -1;
}

int av_torch_tensor_f32(AvTorchFile *t, const AvPy *x, float *out, char *err) {
    REntry *e = tensor_entry(t, x, err);
    if (!e) return -1;
    const unsigned char *d = entry_data(t, e, err);
    if (!d) return -1;
    const AvPy *s = x->storage;
    int64_t es = s->elsize, n = av_torch_numel(x);
    int64_t idx[8] = {0};
    for (int64_t i = 0; i < n; i++) {
        int64_t off = x->offset;
        for (int k = 0; k < x->ndim; k++) off += idx[k] * x->stride[k];
        out[i] = elem(d + off * es, s->dtype);
        for (int k = x->ndim - 1; k >= 0; k--) {
            if (++idx[k] < x->shape[k]) break;
            idx[k] = 0;
        }
    }
    return 0;
}
