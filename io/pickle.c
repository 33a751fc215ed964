/* Pickle writer (protocol 2) and a restricted pickle reader; see pickle.h. */
#include "io/pickle.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/util.h"

/* ---------------------------------------------------------------- writer */

static void put(AvPkw *w, const void *p, size_t n) {
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap < w->len + n) cap *= 2;
        w->buf = av_realloc(w->buf, cap);
        w->cap = cap;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
}

static void put_u32(AvPkw *w, uint32_t v) {
    unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    put(w, b, 4);
}

void av_pkw_free(AvPkw *w) {
    free(w->buf);
    memset(w, 0, sizeof *w);
}

void av_pkw_op(AvPkw *w, char op) {
    put(w, &op, 1);
}

void av_pkw_proto2(AvPkw *w) {
    unsigned char b[2] = {0x80, 2};
    put(w, b, 2);
}

void av_pkw_stop(AvPkw *w) {
    av_pkw_op(w, '.');
}
void av_pkw_none(AvPkw *w) {
    av_pkw_op(w, 'N');
}
void av_pkw_bool(AvPkw *w, int v) {
    av_pkw_op(w, v ? (char)0x88 : (char)0x89);
}

void av_pkw_int(AvPkw *w, int64_t v) {
    if (v >= 0 && v < 256) {
        unsigned char b[2] = {'K', (unsigned char)v};
        put(w, b, 2);
    } else if (v >= 0 && v < 65536) {
        unsigned char b[3] = {'M', (unsigned char)v, (unsigned char)(v >> 8)};
        put(w, b, 3);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
        av_pkw_op(w, 'J');
        put_u32(w, (uint32_t)(int32_t)v);
    } else { /* LONG1: 8 bytes two's complement, little-endian */
        unsigned char b[10] = {0x8a, 8};
        uint64_t u = (uint64_t)v;
        for (int k = 0; k < 8; k++) b[2 + k] = (unsigned char)(u >> (8 * k));
        put(w, b, 10);
    }
}

void av_pkw_float(AvPkw *w, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    unsigned char b[9] = {'G'};
    for (int k = 0; k < 8; k++) b[1 + k] = (unsigned char)(u >> (8 * (7 - k))); /* big-endian */
    put(w, b, 9);
}

void av_pkw_str(AvPkw *w, const char *s) {
    size_t n = strlen(s);
    av_pkw_op(w, 'X');
    put_u32(w, (uint32_t)n);
    put(w, s, n);
}

void av_pkw_global(AvPkw *w, const char *module, const char *name) {
    av_pkw_op(w, 'c');
    put(w, module, strlen(module));
    av_pkw_op(w, '\n');
    put(w, name, strlen(name));
    av_pkw_op(w, '\n');
}

void av_pkw_tuple(AvPkw *w, int n) {
    static const char ops[4] = {')', (char)0x85, (char)0x86, (char)0x87};
    av_pkw_op(w, n <= 3 ? ops[n] : 't');
}

static void pkw_int_tuple(AvPkw *w, int n, const int64_t *v) {
    if (n > 3) av_pkw_op(w, '(');
    for (int k = 0; k < n; k++) av_pkw_int(w, v[k]);
    av_pkw_tuple(w, n);
}

void av_pkw_tensor(AvPkw *w, const char *storage_type, const char *key, int64_t numel, int ndim,
                   const int64_t *shape) {
    int64_t stride[8];
    int64_t s = 1;
    for (int k = ndim - 1; k >= 0; k--) {
        stride[k] = s;
        s *= shape[k];
    }
    av_pkw_global(w, "torch._utils", "_rebuild_tensor_v2");
    av_pkw_op(w, '(');
    av_pkw_op(w, '('); /* persistent id ('storage', type, key, 'cpu', numel) */
    av_pkw_str(w, "storage");
    av_pkw_global(w, "torch", storage_type);
    av_pkw_str(w, key);
    av_pkw_str(w, "cpu");
    av_pkw_int(w, numel);
    av_pkw_op(w, 't');
    av_pkw_op(w, 'Q'); /* BINPERSID */
    av_pkw_int(w, 0);  /* storage offset */
    pkw_int_tuple(w, ndim, shape);
    pkw_int_tuple(w, ndim, stride);
    av_pkw_bool(w, 0); /* requires_grad */
    av_pkw_global(w, "collections", "OrderedDict");
    av_pkw_tuple(w, 0);
    av_pkw_op(w, 'R'); /* backward hooks */
    av_pkw_op(w, 't');
    av_pkw_op(w, 'R');
}

static void pkw_ndarray_head(AvPkw *w) {
    av_pkw_global(w, "numpy._core.multiarray", "_reconstruct");
    av_pkw_global(w, "numpy", "ndarray");
    av_pkw_int(w, 0);
    av_pkw_tuple(w, 1);
    av_pkw_global(w, "_codecs", "encode");
    av_pkw_str(w, "b");
    av_pkw_str(w, "latin1");
    av_pkw_tuple(w, 2);
    av_pkw_op(w, 'R');
    av_pkw_tuple(w, 3);
    av_pkw_op(w, 'R');
}

/* bytes as numpy pickles them in protocol 2: _codecs.encode(latin-1 text, 'latin1') */
static void pkw_bytes(AvPkw *w, const unsigned char *b, size_t n) {
    unsigned char *u = av_malloc(2 * n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (b[i] < 0x80) {
            u[k++] = b[i];
        } else {
            u[k++] = (unsigned char)(0xC0 | (b[i] >> 6));
            u[k++] = (unsigned char)(0x80 | (b[i] & 0x3F));
        }
    }
    av_pkw_global(w, "_codecs", "encode");
    av_pkw_op(w, 'X');
    put_u32(w, (uint32_t)k);
    put(w, u, k);
    av_pkw_str(w, "latin1");
    av_pkw_tuple(w, 2);
    av_pkw_op(w, 'R');
    free(u);
}

void av_pkw_ndarray_i64(AvPkw *w, int64_t n, const int64_t *v) {
    pkw_ndarray_head(w);
    av_pkw_op(w, '(');
    av_pkw_int(w, 1);
    av_pkw_int(w, n);
    av_pkw_tuple(w, 1);
    av_pkw_global(w, "numpy", "dtype");
    av_pkw_str(w, "i8");
    av_pkw_bool(w, 0);
    av_pkw_bool(w, 1);
    av_pkw_tuple(w, 3);
    av_pkw_op(w, 'R');
    av_pkw_op(w, '(');
    av_pkw_int(w, 3);
    av_pkw_str(w, "<");
    av_pkw_none(w);
    av_pkw_none(w);
    av_pkw_none(w);
    av_pkw_int(w, -1);
    av_pkw_int(w, -1);
    av_pkw_int(w, 0);
    av_pkw_op(w, 't');
    av_pkw_op(w, 'b');
    av_pkw_bool(w, 0);
    unsigned char *raw = av_malloc((size_t)n * 8 + 1);
    for (int64_t i = 0; i < n; i++)
        for (int k = 0; k < 8; k++) raw[8 * i + k] = (unsigned char)((uint64_t)v[i] >> (8 * k));
    pkw_bytes(w, raw, (size_t)n * 8);
    free(raw);
    av_pkw_op(w, 't');
    av_pkw_op(w, 'b');
}

void av_pkw_ndarray_str(AvPkw *w, int64_t n, char *const *items) {
    pkw_ndarray_head(w);
    /* state: (1, (n,), dtype('O8', False, True) with its state, False, [items]) */
    av_pkw_op(w, '(');
    av_pkw_int(w, 1);
    av_pkw_int(w, n);
    av_pkw_tuple(w, 1);
    av_pkw_global(w, "numpy", "dtype");
    av_pkw_str(w, "O8");
    av_pkw_bool(w, 0);
    av_pkw_bool(w, 1);
    av_pkw_tuple(w, 3);
    av_pkw_op(w, 'R');
    av_pkw_op(w, '(');
    av_pkw_int(w, 3);
    av_pkw_str(w, "|");
    av_pkw_none(w);
    av_pkw_none(w);
    av_pkw_none(w);
    av_pkw_int(w, -1);
    av_pkw_int(w, -1);
    av_pkw_int(w, 63);
    av_pkw_op(w, 't');
    av_pkw_op(w, 'b');
    av_pkw_bool(w, 0);
    av_pkw_op(w, ']');
    for (int64_t i = 0; i < n; i += 1000) { /* APPENDS in chunks, as pickle does */
        av_pkw_op(w, '(');
        for (int64_t j = i; j < n && j < i + 1000; j++) av_pkw_str(w, items[j]);
        av_pkw_op(w, 'e');
    }
    av_pkw_op(w, 't');
    av_pkw_op(w, 'b');
}

/* ---------------------------------------------------------------- reader */

struct AvPickle {
    int n_blocks, cap_blocks;
    void **blocks;
};

static void *arena(AvPickle *p, size_t bytes) {
    if (p->n_blocks == p->cap_blocks) {
        p->cap_blocks = p->cap_blocks ? 2 * p->cap_blocks : 256;
        p->blocks = av_realloc(p->blocks, sizeof(void *) * (size_t)p->cap_blocks);
    }
    void *b = av_calloc(1, bytes ? bytes : 1);
    p->blocks[p->n_blocks++] = b;
    return b;
}

void av_pickle_free(AvPickle *p) {
    if (!p) return;
    for (int i = 0; i < p->n_blocks; i++) free(p->blocks[i]);
    free(p->blocks);
    free(p);
}

static AvPy *new_obj(AvPickle *p, AvPyKind k) {
    AvPy *o = arena(p, sizeof *o);
    o->kind = k;
    return o;
}

static void push_item(AvPickle *p, AvPy *seq, AvPy *item) {
    if (seq->n == seq->cap) {
        int64_t cap = seq->cap ? 2 * seq->cap : 8;
        AvPy **items = arena(p, sizeof(AvPy *) * (size_t)cap);
        if (seq->n) memcpy(items, seq->items, sizeof(AvPy *) * (size_t)seq->n);
        seq->items = items; /* the old block stays in the arena until the end */
        seq->cap = cap;
    }
    seq->items[seq->n++] = item;
}

static void dict_set(AvPickle *p, AvPy *d, AvPy *k, AvPy *v) {
    if (k->kind == AV_PY_STR)
        for (int64_t i = 0; i < d->n / 2; i++) {
            AvPy *key = d->items[2 * i];
            if (key->kind == AV_PY_STR && !strcmp(key->s, k->s)) {
                d->items[2 * i + 1] = v;
                return;
            }
        }
    push_item(p, d, k);
    push_item(p, d, v);
}

static AvPy *new_str(AvPickle *p, AvPyKind k, const unsigned char *s, size_t n) {
    AvPy *o = new_obj(p, k);
    o->s = arena(p, n + 1);
    memcpy(o->s, s, n);
    o->len = n;
    return o;
}

typedef struct {
    AvPickle *p;
    const unsigned char *d;
    size_t len, pos;
    AvPy **stack;
    int64_t sp, scap;
    AvPy **memo;
    int64_t memo_cap;
    AvPy *mark;
    char *err;
} Vm;

static void vm_push(Vm *v, AvPy *o) {
    if (v->sp == v->scap) {
        v->scap = v->scap ? 2 * v->scap : 256;
        v->stack = av_realloc(v->stack, sizeof(AvPy *) * (size_t)v->scap);
    }
    v->stack[v->sp++] = o;
}

static AvPy *vm_pop(Vm *v) {
    return v->sp > 0 ? v->stack[--v->sp] : NULL;
}
static AvPy *vm_top(Vm *v) {
    return v->sp > 0 ? v->stack[v->sp - 1] : NULL;
}

/* index of the topmost mark, or -1 */
static int64_t vm_marker(Vm *v) {
    for (int64_t i = v->sp - 1; i >= 0; i--)
        if (v->stack[i] == v->mark) return i;
    return -1;
}

static int need(Vm *v, size_t n) {
    if (v->len - v->pos < n) return av_err(v->err, "pickle: truncated data at byte %zu", v->pos);
    return 0;
}

static uint64_t rd_le(const unsigned char *b, int n) {
    uint64_t u = 0;
    for (int k = n - 1; k >= 0; k--) u = (u << 8) | b[k];
    return u;
}

static int64_t rd_long(const unsigned char *b, size_t n) { /* two's complement LE */
    if (n == 0) return 0;
    uint64_t u = 0;
    for (size_t k = 0; k < n && k < 8; k++) u |= (uint64_t)b[k] << (8 * k);
    if (n < 8 && (b[n - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * n);
    return (int64_t)u;
}

static int memo_put(Vm *v, uint64_t idx, AvPy *o) {
    if (idx > (1u << 26))
        return av_err(v->err, "pickle: memo index %llu too large", (unsigned long long)idx);
    if ((int64_t)idx >= v->memo_cap) {
        int64_t cap = v->memo_cap ? v->memo_cap : 256;
        while (cap <= (int64_t)idx) cap *= 2;
        v->memo = av_realloc(v->memo, sizeof(AvPy *) * (size_t)cap);
        memset(v->memo + v->memo_cap, 0, sizeof(AvPy *) * (size_t)(cap - v->memo_cap));
        v->memo_cap = cap;
    }
    v->memo[idx] = o;
    return 0;
}

static int memo_get(Vm *v, uint64_t idx) {
    if ((int64_t)idx >= v->memo_cap || !v->memo[idx])
        return av_err(v->err, "pickle: memo entry %llu unset", (unsigned long long)idx);
    vm_push(v, v->memo[idx]);
    return 0;
}

/* reads a "\n"-terminated line */
static const char *rd_line(Vm *v, size_t *n) {
    const unsigned char *s = v->d + v->pos;
    const unsigned char *e = memchr(s, '\n', v->len - v->pos);
    if (!e) return NULL;
    *n = (size_t)(e - s);
    v->pos += *n + 1;
    return (const char *)s;
}

int av_py_is(const AvPy *o, AvPyKind k) {
    return o && o->kind == k;
}

int av_py_is_global(const AvPy *o, const char *module, const char *name) {
    if (!o || o->kind != AV_PY_GLOBAL) return 0;
    size_t m = strlen(module);
    return !strncmp(o->s, module, m) && o->s[m] == ' ' && !strcmp(o->s + m + 1, name);
}

static int is_numpy_mod(const AvPy *g, const char *name) {
    return av_py_is_global(g, "numpy.core.multiarray", name) ||
           av_py_is_global(g, "numpy._core.multiarray", name);
}

static int is_builtin(const AvPy *g, const char *name) {
    return av_py_is_global(g, "__builtin__", name) || av_py_is_global(g, "builtins", name);
}

/* numpy dtype descriptor ("f4", "<f8", "O8", "U10", "i8", "b1") into dtype fields */
static void set_dtype(AvPy *o, const char *desc) {
    const char *d = desc;
    o->byteorder = '<';
    if (*d == '<' || *d == '>' || *d == '|' || *d == '=') {
        o->byteorder = *d == '=' ? '<' : *d;
        d++;
    }
    char c = *d;
    long n = atol(d + 1);
    o->dtype[0] = 0;
    o->elsize = n;
    switch (c) {
    case 'f':
        snprintf(o->dtype, sizeof o->dtype, "f%ld", n);
        break;
    case 'i':
        snprintf(o->dtype, sizeof o->dtype, "i%ld", n);
        break;
    case 'u':
        snprintf(o->dtype, sizeof o->dtype, "u%ld", n);
        break;
    case 'b':
        snprintf(o->dtype, sizeof o->dtype, "b1");
        o->elsize = 1;
        break;
    case '?':
        snprintf(o->dtype, sizeof o->dtype, "b1");
        o->elsize = 1;
        break;
    case 'O':
        snprintf(o->dtype, sizeof o->dtype, "O");
        o->elsize = 8;
        break;
    case 'U':
        snprintf(o->dtype, sizeof o->dtype, "U");
        o->elsize = 4 * n;
        break;
    case 'S':
        snprintf(o->dtype, sizeof o->dtype, "S");
        o->elsize = n;
        break;
    default:
        snprintf(o->dtype, sizeof o->dtype, "?%c", c);
        break;
    }
}

static void storage_dtype(AvPy *s, const char *type_name) {
    static const struct {
        const char *name, *dtype;
        int size;
    } map[] = {{"FloatStorage", "f4", 4},     {"DoubleStorage", "f8", 8}, {"HalfStorage", "f2", 2},
               {"BFloat16Storage", "bf2", 2}, {"LongStorage", "i8", 8},   {"IntStorage", "i4", 4},
               {"ShortStorage", "i2", 2},     {"CharStorage", "i1", 1},   {"ByteStorage", "u1", 1},
               {"BoolStorage", "b1", 1}};
    const char *sp = strchr(type_name, ' ');
    const char *name = sp ? sp + 1 : type_name;
    snprintf(s->dtype, sizeof s->dtype, "?");
    for (size_t k = 0; k < sizeof map / sizeof map[0]; k++)
        if (!strcmp(name, map[k].name)) {
            snprintf(s->dtype, sizeof s->dtype, "%s", map[k].dtype);
            s->elsize = map[k].size;
        }
    s->byteorder = '<';
}

static int int_tuple(const AvPy *t, int64_t *out, int *n) {
    if (!t || (t->kind != AV_PY_TUPLE && t->kind != AV_PY_LIST) || t->n > 8) return -1;
    for (int64_t k = 0; k < t->n; k++) {
        if (t->items[k]->kind != AV_PY_INT) return -1;
        out[k] = t->items[k]->i;
    }
    *n = (int)t->n;
    return 0;
}

/* Latin-1 bytes from a str of code points < 256 (how numpy smuggles bytes in protocol 2). */
static AvPy *latin1_encode(Vm *v, const AvPy *s) {
    AvPy *o = new_obj(v->p, AV_PY_BYTES);
    o->s = arena(v->p, s->len + 1);
    size_t n = 0;
    const unsigned char *c = (const unsigned char *)s->s;
    for (size_t i = 0; i < s->len;) {
        if (c[i] < 0x80) {
            o->s[n++] = (char)c[i++];
        } else if ((c[i] & 0xE0) == 0xC0 && i + 1 < s->len) {
            unsigned cp = ((unsigned)(c[i] & 0x1F) << 6) | (c[i + 1] & 0x3F);
            if (cp > 255) return NULL;
            o->s[n++] = (char)cp;
            i += 2;
        } else {
            return NULL;
        }
    }
    o->len = n;
    return o;
}

static AvPy *numpy_scalar(Vm *v, const AvPy *dtype, const AvPy *raw) {
    if (!av_py_is(dtype, AV_PY_DTYPE) || !raw || raw->kind != AV_PY_BYTES) return NULL;
    const unsigned char *b = (const unsigned char *)raw->s;
    if (dtype->byteorder == '>') return NULL;
    const char *t = dtype->dtype;
    if ((t[0] == 'i' || t[0] == 'u') && (size_t)dtype->elsize == raw->len && raw->len <= 8) {
        AvPy *o = new_obj(v->p, AV_PY_INT);
        o->i = t[0] == 'i' ? rd_long(b, raw->len) : (int64_t)rd_le(b, (int)raw->len);
        return o;
    }
    if (!strcmp(t, "b1") && raw->len == 1) {
        AvPy *o = new_obj(v->p, AV_PY_BOOL);
        o->i = b[0] != 0;
        return o;
    }
    if (t[0] == 'f' && (raw->len == 8 || raw->len == 4) && (size_t)dtype->elsize == raw->len) {
        AvPy *o = new_obj(v->p, AV_PY_FLOAT);
        if (raw->len == 8) {
            uint64_t u = rd_le(b, 8);
            memcpy(&o->f, &u, 8);
        } else {
            uint32_t u = (uint32_t)rd_le(b, 4);
            float f;
            memcpy(&f, &u, 4);
            o->f = f;
        }
        return o;
    }
    return NULL;
}

/* REDUCE: callable(*args) for the callables we know; an opaque object otherwise. */
static int reduce(Vm *v, AvPy *fn, AvPy *args) {
    if (!args || args->kind != AV_PY_TUPLE) return av_err(v->err, "pickle: REDUCE without a tuple");
    AvPy *o = NULL;
    int64_t n = args->n;
    AvPy **a = args->items;
    if (av_py_is_global(fn, "collections", "OrderedDict") ||
        av_py_is_global(fn, "collections", "defaultdict") || is_builtin(fn, "dict")) {
        o = new_obj(v->p, AV_PY_DICT);
        if (is_builtin(fn, "dict") && n == 1 && a[0]->kind == AV_PY_DICT) *o = *a[0];
    } else if (is_builtin(fn, "set") || is_builtin(fn, "frozenset") || is_builtin(fn, "list") ||
               is_builtin(fn, "tuple")) {
        o = new_obj(v->p, is_builtin(fn, "tuple") ? AV_PY_TUPLE : AV_PY_LIST);
        if (n == 1 && (a[0]->kind == AV_PY_LIST || a[0]->kind == AV_PY_TUPLE))
            for (int64_t k = 0; k < a[0]->n; k++) push_item(v->p, o, a[0]->items[k]);
    } else if (av_py_is_global(fn, "torch._utils", "_rebuild_tensor_v2") ||
               av_py_is_global(fn, "torch._utils", "_rebuild_tensor")) {
        if (n < 4 || a[0]->kind != AV_PY_STORAGE || a[1]->kind != AV_PY_INT)
            return av_err(v->err, "pickle: unexpected arguments to %s", fn->s);
        o = new_obj(v->p, AV_PY_TENSOR);
        o->storage = a[0];
        o->offset = a[1]->i;
        int nd = 0, ns = 0;
        if (int_tuple(a[2], o->shape, &nd) || int_tuple(a[3], o->stride, &ns) || nd != ns)
            return av_err(v->err, "pickle: a tensor with a bad shape or stride");
        o->ndim = nd;
        memcpy(o->dtype, a[0]->dtype, sizeof o->dtype);
        o->elsize = a[0]->elsize;
    } else if (av_py_is_global(fn, "torch._utils", "_rebuild_parameter") ||
               av_py_is_global(fn, "torch._utils", "_rebuild_parameter_with_state")) {
        if (n < 1) return av_err(v->err, "pickle: %s without arguments", fn->s);
        o = a[0];
    } else if (is_numpy_mod(fn, "_reconstruct")) {
        o = new_obj(v->p, AV_PY_NDARRAY);
    } else if (av_py_is_global(fn, "numpy", "dtype")) {
        if (n < 1 || a[0]->kind != AV_PY_STR) return av_err(v->err, "pickle: bad numpy dtype");
        o = new_obj(v->p, AV_PY_DTYPE);
        set_dtype(o, a[0]->s);
    } else if (is_numpy_mod(fn, "scalar") && n == 2 && (o = numpy_scalar(v, a[0], a[1]))) {
        /* done */
    } else if ((is_builtin(fn, "bytes") || is_builtin(fn, "bytearray")) && n == 0) {
        o = new_str(v->p, AV_PY_BYTES, (const unsigned char *)"", 0); /* b'' in protocol 2 */
    } else if (av_py_is_global(fn, "_codecs", "encode") && n >= 1 && a[0]->kind == AV_PY_STR) {
        o = latin1_encode(v, a[0]);
        if (!o) return av_err(v->err, "pickle: _codecs.encode of a non-latin1 string");
    } else {
        o = new_obj(v->p, AV_PY_OBJECT);
        o->callable = fn;
        o->args = args;
    }
    vm_push(v, o);
    return 0;
}

/* BUILD: numpy arrays and dtypes take their state; other objects keep it. */
static int build(Vm *v, AvPy *o, AvPy *st) {
    if (!o || !st) return av_err(v->err, "pickle: BUILD on an empty stack");
    if (o->kind == AV_PY_DTYPE) {
        if (st->kind == AV_PY_TUPLE && st->n >= 6 && st->items[1]->kind == AV_PY_STR) {
            int bo = st->items[1]->s[0];
            o->byteorder = bo == '=' ? '<' : bo;
            if (st->items[5]->kind == AV_PY_INT && st->items[5]->i > 0 &&
                (o->dtype[0] == 'U' || o->dtype[0] == 'S'))
                o->elsize = st->items[5]->i;
        }
        return 0;
    }
    if (o->kind == AV_PY_NDARRAY) {
        if (st->kind != AV_PY_TUPLE || st->n != 5 || st->items[2]->kind != AV_PY_DTYPE)
            return av_err(v->err, "pickle: unexpected numpy array state");
        int nd = 0;
        if (int_tuple(st->items[1], o->shape, &nd))
            return av_err(v->err, "pickle: numpy array with a bad shape");
        o->ndim = nd;
        AvPy *dt = st->items[2];
        memcpy(o->dtype, dt->dtype, sizeof o->dtype);
        o->elsize = dt->elsize;
        o->byteorder = dt->byteorder;
        if (st->items[3]->kind == AV_PY_BOOL && st->items[3]->i && nd > 1)
            return av_err(v->err, "pickle: Fortran-ordered numpy arrays are not supported");
        AvPy *data = st->items[4];
        int64_t count = 1;
        for (int k = 0; k < nd; k++) count *= o->shape[k];
        if (!strcmp(o->dtype, "O")) {
            if (data->kind != AV_PY_LIST || data->n != count)
                return av_err(v->err, "pickle: numpy object array without its items");
            o->items = data->items;
            o->n = data->n;
        } else {
            if (data->kind == AV_PY_STR) data = latin1_encode(v, data);
            if (!data || data->kind != AV_PY_BYTES || (int64_t)data->len != count * o->elsize)
                return av_err(
                    v->err,
                    "pickle: numpy array data of the wrong size (%s, %lld x %lld bytes, got %zu)",
                    o->dtype, (long long)count, (long long)o->elsize, data ? data->len : 0);
            o->s = data->s;
            o->len = data->len;
            o->n = count;
        }
        return 0;
    }
    if (o->kind == AV_PY_OBJECT) o->state = st;
    /* dicts (OrderedDict's _metadata) and anything else: ignore the state */
    return 0;
}

static int persistent_load(Vm *v, AvPy *pid) {
    if (!pid || pid->kind != AV_PY_TUPLE || pid->n < 5 || pid->items[0]->kind != AV_PY_STR ||
        strcmp(pid->items[0]->s, "storage") || pid->items[1]->kind != AV_PY_GLOBAL ||
        pid->items[2]->kind != AV_PY_STR || pid->items[4]->kind != AV_PY_INT)
        return av_err(v->err, "pickle: unsupported persistent id (not a torch storage)");
    AvPy *s = new_obj(v->p, AV_PY_STORAGE);
    s->s = pid->items[2]->s;
    s->len = pid->items[2]->len;
    s->numel = pid->items[4]->i;
    storage_dtype(s, pid->items[1]->s);
    if (s->dtype[0] == '?')
        return av_err(v->err, "pickle: unsupported tensor storage type '%s'", pid->items[1]->s);
    vm_push(v, s);
    return 0;
}

static int seq_from_mark(Vm *v, AvPyKind k, AvPy *into) {
    int64_t m = vm_marker(v);
    if (m < 0) return av_err(v->err, "pickle: missing MARK");
    AvPy *o = into ? into : new_obj(v->p, k);
    if (k == AV_PY_DICT) {
        if ((v->sp - m - 1) % 2) return av_err(v->err, "pickle: odd number of dict items");
        for (int64_t i = m + 1; i < v->sp; i += 2) dict_set(v->p, o, v->stack[i], v->stack[i + 1]);
    } else {
        for (int64_t i = m + 1; i < v->sp; i++) push_item(v->p, o, v->stack[i]);
    }
    v->sp = m;
    if (!into) vm_push(v, o);
    return 0;
}

static int tuple_n(Vm *v, int n) {
    if (v->sp < n) return av_err(v->err, "pickle: stack underflow");
    AvPy *t = new_obj(v->p, AV_PY_TUPLE);
    for (int i = 0; i < n; i++) push_item(v->p, t, v->stack[v->sp - n + i]);
    v->sp -= n;
    vm_push(v, t);
    return 0;
}

#define POP_OR_FAIL(x)                                                                             \
    do {                                                                                           \
        (x) = vm_pop(v);                                                                           \
        if (!(x)) return av_err(v->err, "pickle: stack underflow at byte %zu", v->pos);            \
    } while (0)

static int run(Vm *v, AvPy **root) {
    while (v->pos < v->len) {
        unsigned char op = v->d[v->pos++];
        AvPy *a, *b, *c;
        size_t n;
        switch (op) {
        case 0x80: /* PROTO */
            if (need(v, 1)) return -1;
            if (v->d[v->pos] > 5) return av_err(v->err, "pickle: protocol %d", v->d[v->pos]);
            v->pos++;
            break;
        case 0x95: /* FRAME */
            if (need(v, 8)) return -1;
            v->pos += 8;
            break;
        case '.': /* STOP */
            POP_OR_FAIL(a);
            *root = a;
            return 0;
        case '(':
            vm_push(v, v->mark);
            break;
        case '0':
            POP_OR_FAIL(a);
            break;
        case '1': {
            int64_t m = vm_marker(v);
            if (m < 0) return av_err(v->err, "pickle: missing MARK");
            v->sp = m;
            break;
        }
        case '2':
            a = vm_top(v);
            if (!a) return av_err(v->err, "pickle: DUP on an empty stack");
            vm_push(v, a);
            break;
        case 'N':
            vm_push(v, new_obj(v->p, AV_PY_NONE));
            break;
        case 0x88:
        case 0x89:
            a = new_obj(v->p, AV_PY_BOOL);
            a->i = op == 0x88;
            vm_push(v, a);
            break;
        case 'K':
        case 'M':
        case 'J': {
            int w = op == 'K' ? 1 : op == 'M' ? 2 : 4;
            if (need(v, (size_t)w)) return -1;
            a = new_obj(v->p, AV_PY_INT);
            a->i = op == 'J' ? (int64_t)(int32_t)rd_le(v->d + v->pos, 4)
                             : (int64_t)rd_le(v->d + v->pos, w);
            v->pos += (size_t)w;
            vm_push(v, a);
            break;
        }
        case 0x8a:
        case 0x8b: { /* LONG1, LONG4 */
            int w = op == 0x8a ? 1 : 4;
            if (need(v, (size_t)w)) return -1;
            n = (size_t)rd_le(v->d + v->pos, w);
            v->pos += (size_t)w;
            if (need(v, n)) return -1;
            if (n > 8) return av_err(v->err, "pickle: integer wider than 64 bits");
            a = new_obj(v->p, AV_PY_INT);
            a->i = rd_long(v->d + v->pos, n);
            v->pos += n;
            vm_push(v, a);
            break;
        }
        case 'I':
        case 'L':
        case 'F': {
            const char *s = rd_line(v, &n);
            if (!s || n > 60) return av_err(v->err, "pickle: bad text number");
            char tmp[64];
            memcpy(tmp, s, n);
            tmp[n] = 0;
            if (op == 'F') {
                a = new_obj(v->p, AV_PY_FLOAT);
                a->f = strtod(tmp, NULL);
            } else if (op == 'I' && (!strcmp(tmp, "00") || !strcmp(tmp, "01"))) {
                a = new_obj(v->p, AV_PY_BOOL);
                a->i = tmp[1] == '1';
            } else {
                a = new_obj(v->p, AV_PY_INT);
                a->i = strtoll(tmp, NULL, 10);
            }
            vm_push(v, a);
            break;
        }
        case 'G': {
            if (need(v, 8)) return -1;
            uint64_t u = 0;
            for (int k = 0; k < 8; k++) u = (u << 8) | v->d[v->pos + k];
            v->pos += 8;
            a = new_obj(v->p, AV_PY_FLOAT);
            memcpy(&a->f, &u, 8);
            vm_push(v, a);
            break;
        }
        case 'X':
        case 0x8c:
        case 0x8d:
        case 'B':
        case 'C':
        case 0x8e:
        case 'T':
        case 'U': { /* unicode / bytes / py2 str with a length prefix */
            int w = (op == 0x8c || op == 'C' || op == 'U') ? 1 : (op == 0x8d || op == 0x8e) ? 8 : 4;
            if (need(v, (size_t)w)) return -1;
            uint64_t len = rd_le(v->d + v->pos, w);
            v->pos += (size_t)w;
            if (len > v->len - v->pos) return av_err(v->err, "pickle: truncated string");
            AvPyKind k = (op == 'B' || op == 'C' || op == 0x8e) ? AV_PY_BYTES : AV_PY_STR;
            vm_push(v, new_str(v->p, k, v->d + v->pos, (size_t)len));
            v->pos += (size_t)len;
            break;
        }
        case ')':
            vm_push(v, new_obj(v->p, AV_PY_TUPLE));
            break;
        case 't':
            if (seq_from_mark(v, AV_PY_TUPLE, NULL)) return -1;
            break;
        case 0x85:
        case 0x86:
        case 0x87:
            if (tuple_n(v, op - 0x84)) return -1;
            break;
        case ']':
            vm_push(v, new_obj(v->p, AV_PY_LIST));
            break;
        case 'l':
            if (seq_from_mark(v, AV_PY_LIST, NULL)) return -1;
            break;
        case '}':
            vm_push(v, new_obj(v->p, AV_PY_DICT));
            break;
        case 'd':
            if (seq_from_mark(v, AV_PY_DICT, NULL)) return -1;
            break;
        case 0x8f:
            vm_push(v, new_obj(v->p, AV_PY_LIST));
            break; /* EMPTY_SET */
        case 'a':
            POP_OR_FAIL(a);
            b = vm_top(v);
            if (!b || (b->kind != AV_PY_LIST && b->kind != AV_PY_OBJECT))
                return av_err(v->err, "pickle: APPEND to a non-list");
            if (b->kind == AV_PY_LIST) push_item(v->p, b, a);
            break;
        case 'e':
        case 0x90: { /* APPENDS, ADDITEMS */
            int64_t m = vm_marker(v);
            if (m < 1) return av_err(v->err, "pickle: APPENDS without a list");
            b = v->stack[m - 1];
            if (b->kind == AV_PY_LIST) {
                if (seq_from_mark(v, AV_PY_LIST, b)) return -1;
            } else {
                v->sp = m; /* items appended to an opaque object: dropped */
            }
            break;
        }
        case 0x91: /* FROZENSET */
            if (seq_from_mark(v, AV_PY_LIST, NULL)) return -1;
            break;
        case 's':
            POP_OR_FAIL(a);
            POP_OR_FAIL(b);
            c = vm_top(v);
            if (!c) return av_err(v->err, "pickle: SETITEM on an empty stack");
            if (c->kind == AV_PY_DICT) dict_set(v->p, c, b, a);
            break;
        case 'u': {
            int64_t m = vm_marker(v);
            if (m < 1) return av_err(v->err, "pickle: SETITEMS without a dict");
            c = v->stack[m - 1];
            if (c->kind == AV_PY_DICT) {
                if (seq_from_mark(v, AV_PY_DICT, c)) return -1;
            } else {
                v->sp = m;
            }
            break;
        }
        case 'g':
        case 'p': {
            const char *s = rd_line(v, &n);
            if (!s) return av_err(v->err, "pickle: bad memo index");
            uint64_t idx = strtoull(s, NULL, 10);
            if (op == 'g') {
                if (memo_get(v, idx)) return -1;
            } else if (!vm_top(v) || memo_put(v, idx, vm_top(v))) {
                return av_err(v->err, "pickle: PUT failed");
            }
            break;
        }
        case 'h':
        case 'j':
        case 'q':
        case 'r': {
            int w = (op == 'h' || op == 'q') ? 1 : 4;
            if (need(v, (size_t)w)) return -1;
            uint64_t idx = rd_le(v->d + v->pos, w);
            v->pos += (size_t)w;
            if (op == 'h' || op == 'j') {
                if (memo_get(v, idx)) return -1;
            } else {
                if (!vm_top(v)) return av_err(v->err, "pickle: PUT on an empty stack");
                if (memo_put(v, idx, vm_top(v))) return -1;
            }
            break;
        }
        case 0x94: /* MEMOIZE */
            if (!vm_top(v)) return av_err(v->err, "pickle: MEMOIZE on an empty stack");
            {
                int64_t idx = 0;
                while (idx < v->memo_cap && v->memo[idx]) idx++;
                if (memo_put(v, (uint64_t)idx, vm_top(v))) return -1;
            }
            break;
        case 'c': {
            size_t n1, n2;
            const char *m = rd_line(v, &n1);
            const char *nm = m ? rd_line(v, &n2) : NULL;
            if (!nm) return av_err(v->err, "pickle: bad GLOBAL");
            a = new_obj(v->p, AV_PY_GLOBAL);
            a->s = arena(v->p, n1 + n2 + 2);
            memcpy(a->s, m, n1);
            a->s[n1] = ' ';
            memcpy(a->s + n1 + 1, nm, n2);
            a->len = n1 + n2 + 1;
            vm_push(v, a);
            break;
        }
        case 0x93: /* STACK_GLOBAL */
            POP_OR_FAIL(b);
            POP_OR_FAIL(a);
            if (a->kind != AV_PY_STR || b->kind != AV_PY_STR)
                return av_err(v->err, "pickle: bad STACK_GLOBAL");
            c = new_obj(v->p, AV_PY_GLOBAL);
            c->s = arena(v->p, a->len + b->len + 2);
            snprintf(c->s, a->len + b->len + 2, "%s %s", a->s, b->s);
            c->len = a->len + b->len + 1;
            vm_push(v, c);
            break;
        case 'R':
            POP_OR_FAIL(b);
            POP_OR_FAIL(a);
            if (reduce(v, a, b)) return -1;
            break;
        case 0x81: /* NEWOBJ cls args */
            POP_OR_FAIL(b);
            POP_OR_FAIL(a);
            if (av_py_is_global(a, "collections", "OrderedDict") ||
                av_py_is_global(a, "collections", "defaultdict")) {
                vm_push(v, new_obj(v->p, AV_PY_DICT));
            } else {
                c = new_obj(v->p, AV_PY_OBJECT);
                c->callable = a;
                c->args = b;
                vm_push(v, c);
            }
            break;
        case 0x92: /* NEWOBJ_EX cls args kwargs */
            POP_OR_FAIL(c);
            POP_OR_FAIL(b);
            POP_OR_FAIL(a);
            c = new_obj(v->p, AV_PY_OBJECT);
            c->callable = a;
            c->args = b;
            vm_push(v, c);
            break;
        case 'b':
            POP_OR_FAIL(b);
            if (build(v, vm_top(v), b)) return -1;
            break;
        case 'Q':
            POP_OR_FAIL(a);
            if (persistent_load(v, a)) return -1;
            break;
        default:
            return av_err(v->err, "pickle: unsupported opcode 0x%02x at byte %zu", op, v->pos - 1);
        }
    }
    return av_err(v->err, "pickle: no STOP opcode");
}

AvPickle *av_pickle_load(const unsigned char *data, size_t len, AvPy **root, char *err) {
    AvPickle *p = av_calloc(1, sizeof *p);
    Vm v = {.p = p, .d = data, .len = len, .err = err};
    v.mark = new_obj(p, AV_PY_MARK);
    *root = NULL;
    int rc = run(&v, root);
    free(v.stack);
    free(v.memo);
    if (rc) {
        av_pickle_free(p);
        *root = NULL;
        return NULL;
    }
    return p;
}

/* ---------------------------------------------------------------- helpers */

const AvPy *av_py_get(const AvPy *d, const char *key) {
    if (!d || d->kind != AV_PY_DICT) return NULL;
    for (int64_t i = 0; i < d->n / 2; i++) {
        const AvPy *k = d->items[2 * i];
        if (k->kind == AV_PY_STR && !strcmp(k->s, key)) return d->items[2 * i + 1];
    }
    return NULL;
}

const char *av_py_class(const AvPy *o) {
    return o && o->kind == AV_PY_OBJECT && o->callable && o->callable->kind == AV_PY_GLOBAL
               ? o->callable->s
               : NULL;
}

const char *av_py_kind_name(AvPyKind k) {
    static const char *names[] = {"None",   "bool",  "int",     "float",  "str",    "bytes",
                                  "tuple",  "list",  "dict",    "global", "object", "storage",
                                  "tensor", "dtype", "ndarray", "mark"};
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

/* Python's repr of a float: the shortest %.*g that reads back */
static void float_str(double f, char *buf, size_t n) {
    if (isnan(f)) {
        snprintf(buf, n, "nan");
        return;
    }
    if (isinf(f)) {
        snprintf(buf, n, f > 0 ? "inf" : "-inf");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, f);
        if (strtod(buf, NULL) == f) break;
    }
    if (!strpbrk(buf, ".eni")) snprintf(buf + strlen(buf), n - strlen(buf), ".0");
}

static char *scalar_str(const AvPy *o) {
    char buf[64];
    switch (o->kind) {
    case AV_PY_STR:
        return av_strdup(o->s);
    case AV_PY_BYTES:
        return av_strdup(o->s);
    case AV_PY_INT:
        snprintf(buf, sizeof buf, "%lld", (long long)o->i);
        break;
    case AV_PY_BOOL:
        snprintf(buf, sizeof buf, "%s", o->i ? "True" : "False");
        break;
    case AV_PY_FLOAT:
        float_str(o->f, buf, sizeof buf);
        break;
    default:
        return NULL;
    }
    return av_strdup(buf);
}

/* UTF-32LE (numpy 'U') to UTF-8, stopping at the first NUL */
static char *ucs4_to_utf8(const unsigned char *b, int64_t nchar) {
    char *s = av_malloc((size_t)nchar * 4 + 1);
    size_t n = 0;
    for (int64_t i = 0; i < nchar; i++) {
        uint32_t c = (uint32_t)rd_le(b + 4 * i, 4);
        if (!c) break;
        if (c < 0x80) {
            s[n++] = (char)c;
        } else if (c < 0x800) {
            s[n++] = (char)(0xC0 | (c >> 6));
            s[n++] = (char)(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            s[n++] = (char)(0xE0 | (c >> 12));
            s[n++] = (char)(0x80 | ((c >> 6) & 0x3F));
            s[n++] = (char)(0x80 | (c & 0x3F));
        } else {
            s[n++] = (char)(0xF0 | (c >> 18));
            s[n++] = (char)(0x80 | ((c >> 12) & 0x3F));
            s[n++] = (char)(0x80 | ((c >> 6) & 0x3F));
            s[n++] = (char)(0x80 | (c & 0x3F));
        }
    }
    s[n] = 0;
    return s;
}

int64_t av_py_strings(const AvPy *o, char ***out) {
    *out = NULL;
    if (!o) return -1;
    int64_t n = o->n;
    char **r = NULL;
    if (o->kind == AV_PY_LIST || o->kind == AV_PY_TUPLE ||
        (o->kind == AV_PY_NDARRAY && !strcmp(o->dtype, "O"))) {
        if (o->kind == AV_PY_NDARRAY && o->ndim != 1) return -1;
        r = av_malloc(sizeof(char *) * (size_t)(n + 1));
        for (int64_t i = 0; i < n; i++) {
            r[i] = scalar_str(o->items[i]);
            if (!r[i]) {
                av_free_strings(r, i);
                return -1;
            }
        }
    } else if (o->kind == AV_PY_NDARRAY && o->ndim == 1 && o->byteorder != '>') {
        const unsigned char *b = (const unsigned char *)o->s;
        int64_t es = o->elsize;
        r = av_malloc(sizeof(char *) * (size_t)(n + 1));
        for (int64_t i = 0; i < n; i++) {
            const unsigned char *e = b + i * es;
            char buf[64];
            const char *t = o->dtype;
            if (t[0] == 'U') {
                r[i] = ucs4_to_utf8(e, es / 4);
                continue;
            }
            if (t[0] == 'S') {
                r[i] = av_malloc((size_t)es + 1);
                memcpy(r[i], e, (size_t)es);
                r[i][es] = 0;
                continue;
            }
            if (t[0] == 'i' && es <= 8)
                snprintf(buf, sizeof buf, "%lld", (long long)rd_long(e, (size_t)es));
            else if (t[0] == 'u' && es <= 8)
                snprintf(buf, sizeof buf, "%llu", (unsigned long long)rd_le(e, (int)es));
            else if (!strcmp(t, "b1"))
                snprintf(buf, sizeof buf, "%s", e[0] ? "True" : "False");
            else if (!strcmp(t, "f8") || !strcmp(t, "f4")) {
                double f;
                if (es == 8) {
                    uint64_t u = rd_le(e, 8);
                    memcpy(&f, &u, 8);
                } else {
                    uint32_t u = (uint32_t)rd_le(e, 4);
                    float g;
                    memcpy(&g, &u, 4);
                    f = g;
                }
                float_str(f, buf, sizeof buf);
            } else {
                av_free_strings(r, i);
                return -1;
            }
            r[i] = av_strdup(buf);
        }
    } else {
        return -1;
    }
    r[n] = NULL;
    *out = r;
    return n;
}
