/* The model file: an HDF5 file of named float arrays, string lists and key/value
 * attributes. Models decide what goes in it (weights by their scvi-tools names,
 * optimiser state, the setup registry, training history); this file only stores it. */
#ifndef AV_IO_BLOB_H
#define AV_IO_BLOB_H
#include <stdint.h>

typedef struct {
    char
        *name; /* may contain '/' (groups) and spaces, e.g. "params/z_encoder.x.Layer 0.0.weight" */
    int64_t rows, cols;
    float *data;
} AvArray;

typedef struct {
    char *name;
    int64_t n;
    char **items;
} AvStrings;

typedef struct {
    char *key, *value;
} AvAttr;

typedef struct {
    int n_arrays, n_strings, n_attrs;
    AvArray *arrays;
    AvStrings *strings;
    AvAttr *attrs;
} AvBlob;

void av_blob_add_array(AvBlob *b, const char *name, int64_t rows, int64_t cols,
                       const float *data); /* copies */
void av_blob_add_strings(AvBlob *b, const char *name, int64_t n, char *const *items);
void av_blob_set_attr(AvBlob *b, const char *key, const char *value);
const AvArray *av_blob_array(const AvBlob *b, const char *name);
const AvStrings *av_blob_strings(const AvBlob *b, const char *name);
const char *av_blob_attr(const AvBlob *b, const char *key);
void av_blob_free(AvBlob *b);

/* Atomic save (temporary file + rename) and load. */
int av_blob_save(const char *path, const AvBlob *b, char *err);
int av_blob_load(const char *path, AvBlob *b, char *err);

#endif
