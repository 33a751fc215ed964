/* Python pickles, the subset that torch.save and scvi-tools use.
 *
 * Writer: appends protocol-2 opcodes to a growing byte buffer; the caller lays out the
 * object tree (dicts, tuples, tensors, numpy arrays) opcode by opcode.
 *
 * Reader: a small pickle virtual machine that never imports or calls anything. Globals
 * are recorded by name; the few callables torch, numpy and collections pickles rely on are
 * interpreted (OrderedDict, defaultdict, torch._utils._rebuild_tensor_v2 and
 * _rebuild_parameter, numpy's _reconstruct / dtype / scalar, _codecs.encode, set and
 * frozenset); any other call (pandas DataFrames in history_, slices, ...) becomes an opaque
 * object that the caller may ignore. Every object lives in the reader's arena. */
#ifndef AV_IO_PICKLE_H
#define AV_IO_PICKLE_H
#include <stddef.h>
#include <stdint.h>

/* ---- writer ---- */

typedef struct {
    unsigned char *buf;
    size_t len, cap;
} AvPkw;

void av_pkw_free(AvPkw *w);
void av_pkw_op(AvPkw *w, char op); /* a one-byte opcode: '(' ')' '}' ']' 't' 'u' 'e' ... */
void av_pkw_proto2(AvPkw *w);
void av_pkw_stop(AvPkw *w);
void av_pkw_none(AvPkw *w);
void av_pkw_bool(AvPkw *w, int v);
void av_pkw_int(AvPkw *w, int64_t v);
void av_pkw_float(AvPkw *w, double v);
void av_pkw_str(AvPkw *w, const char *s); /* BINUNICODE, UTF-8 */
void av_pkw_global(AvPkw *w, const char *module, const char *name);
/* tuple of n items pushed since the call's matching av_pkw_op(w, '(') (n >= 4), or the
 * short forms for n <= 3 (no mark then) */
void av_pkw_tuple(AvPkw *w, int n);
/* A torch tensor: _rebuild_tensor_v2 of persistent storage `key` (a "torch
 * <storage_type>" such as FloatStorage/LongStorage of numel elements), contiguous
 * shape, no grad. ndim may be 0 (a scalar). */
void av_pkw_tensor(AvPkw *w, const char *storage_type, const char *key, int64_t numel, int ndim,
                   const int64_t *shape);
/* A 1-D numpy object array of str, as numpy 2 pickles it. */
void av_pkw_ndarray_str(AvPkw *w, int64_t n, char *const *items);
/* A 1-D numpy int64 array. */
void av_pkw_ndarray_i64(AvPkw *w, int64_t n, const int64_t *v);

/* ---- reader ---- */

typedef enum {
    AV_PY_NONE,
    AV_PY_BOOL,
    AV_PY_INT,
    AV_PY_FLOAT,
    AV_PY_STR,
    AV_PY_BYTES,
    AV_PY_TUPLE,
    AV_PY_LIST,
    AV_PY_DICT, /* items: key0, value0, key1, value1, ... (n counts pairs) */
    AV_PY_GLOBAL,
    AV_PY_OBJECT, /* an uninterpreted call: callable, args, state */
    AV_PY_STORAGE,
    AV_PY_TENSOR,
    AV_PY_DTYPE,
    AV_PY_NDARRAY,
    AV_PY_MARK /* internal */
} AvPyKind;

typedef struct AvPy AvPy;
struct AvPy {
    AvPyKind kind;
    int64_t i; /* bool, int */
    double f;
    char *s;    /* str (UTF-8, NUL-terminated), bytes; global: "module name" */
    size_t len; /* str/bytes length */
    AvPy **items;
    int64_t n, cap;                /* tuple/list items, dict pairs */
    AvPy *callable, *args, *state; /* object */
    /* storage: s = key, dtype; tensor: storage, offset, shape, stride; ndarray: dtype,
     * shape, raw data in s/len or object items in items/n */
    char dtype[16]; /* numpy-style: "f4", "f8", "i8", "i4", "f2", "bf2", "b1", "O", "U", "S" */
    int byteorder;  /* '<', '>', '|' */
    int64_t elsize; /* bytes per element */
    int64_t numel;  /* storage */
    AvPy *storage;  /* tensor */
    int64_t offset; /* tensor, in elements */
    int ndim;       /* tensor, ndarray */
    int64_t shape[8], stride[8];
};

typedef struct AvPickle AvPickle; /* owns every AvPy it returns */

/* Runs the pickle in data[0..len). Returns NULL and fills err on malformed or unsupported
 * input (an opcode outside the subset, EXT registry, INST/OBJ). */
AvPickle *av_pickle_load(const unsigned char *data, size_t len, AvPy **root, char *err);
void av_pickle_free(AvPickle *p);

/* Helpers for walking the tree. */
const AvPy *av_py_get(const AvPy *dict, const char *key); /* dict lookup by str key */
int av_py_is(const AvPy *o, AvPyKind k);
int av_py_is_global(const AvPy *o, const char *module, const char *name);
/* The class name of an opaque object ("pandas.core.frame DataFrame"), or NULL. */
const char *av_py_class(const AvPy *o);
const char *av_py_kind_name(AvPyKind k);
/* Items of a 1-D sequence of str: a list/tuple of str or a numpy object or unicode
 * array. Numbers and bools are written as Python's str() would. Returns the count and a
 * malloc'ed array of malloc'ed strings, or -1 when o is not such a sequence. */
int64_t av_py_strings(const AvPy *o, char ***out);

#endif
