/* Small HDF5 helpers shared by the readers in io/ (never included outside io/). */
#ifndef AV_IO_H5UTIL_H
#define AV_IO_H5UTIL_H
#include <hdf5.h>
#include <stdint.h>

#include "src/data.h"

/* Silences HDF5's own error printing (once per process) and registers LZF. */
void h5u_init(void);

/* The innermost message of HDF5's current error stack ("" when empty), e.g.
 * "truncated file: eof = 296932, ...". Points into a static buffer. */
const char *h5u_last_error(void);

int h5u_exists(hid_t loc, const char *path);     /* link exists (every component) */
int h5u_is_group(hid_t loc, const char *path);   /* exists and is a group */
int h5u_is_dataset(hid_t loc, const char *path); /* exists and is a dataset */
int h5u_has_attr(hid_t obj, const char *name);

/* Scalar (or first element of a 1-D) string attribute, vlen or fixed length.
 * Returns a malloc'd string or NULL. */
char *h5u_attr_string(hid_t obj, const char *name);
/* String array attribute (vlen or fixed); an empty numeric attribute gives n = 0.
 * Returns 0 on success. */
int h5u_attr_strings(hid_t obj, const char *name, int64_t *n, char ***out);
/* Integer array attribute (any integer width), up to max values. Returns count or -1. */
int h5u_attr_ints(hid_t obj, const char *name, int64_t *vals, int max);

/* Length of a 1-D dataset (or first dim), rank and dims (up to 2). Returns rank or -1. */
int h5u_dims(hid_t dset, int64_t dims[2]);

/* Reads a whole string dataset (vlen or fixed length, 1-D or (n,1)). Returns 0 on success. */
int h5u_read_strings(hid_t dset, int64_t *n, char ***out);
/* Reads a 1-D slab [lo, lo+count) of a 1-D dataset converted to mem_type. */
int h5u_read_slab(hid_t dset, hid_t mem_type, int64_t lo, int64_t count, void *buf);
/* h5u_read_slab for large slabs of gzip-compressed data: where the dataset is 1-D, chunked,
 * deflate its only filter and stored as mem_type, the chunks are read raw and inflated on
 * the OpenMP team (zlib), so decompression, which sets the read rate of such files, runs on
 * every thread; otherwise, or on any surprise, h5u_read_slab. Same result either way. */
int h5u_read_slab_inflate(hid_t dset, hid_t mem_type, int64_t lo, int64_t count, void *buf);
/* How many chunks h5u_read_slab_inflate has inflated itself in this process (tests). */
int64_t h5u_inflated_chunks(void);
/* Reads a whole numeric dataset as doubles (bool enums become 0/1). */
int h5u_read_doubles(hid_t dset, int64_t n, double *out);

/* Checks every filter in the dataset's pipeline is available. On failure fills err with
 * one line naming file, dataset, filter id and name, and how to fix it. */
int h5u_check_filters(hid_t dset, const char *file, const char *path, char *err);

/* "float32", "int64", "vlen string", ... for the dataset's stored type. */
const char *h5u_type_name(hid_t dset, char *buf, size_t len);

/* The length of the column (or dataframe index) at path, in any encoding h5u_read_column
 * reads: a 1-D (or n x 1) dataset, a nullable-* group (its values), a categorical (its
 * codes); -1 when there is none or it is none of these. */
int64_t h5u_column_length(hid_t loc, const char *path);

/* Reads an obs/var-like column stored under group grp with name key as a categorical
 * (modern group or legacy codes + object-ref categories), nullable, numeric or string
 * column. n is the expected length. */
int h5u_read_column(hid_t grp, const char *key, int64_t n, AvColumn *out, const char *file,
                    const char *where, char *err);

#endif
