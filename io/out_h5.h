/* Internal helpers of the writers (io/output.c, io/blob.c): HDF5 elements written the
 * way h5py and anndata write them (formats.md 1.2 and 1.10). Not a public interface. */
#ifndef AV_IO_OUT_H5_H
#define AV_IO_OUT_H5_H
#include <hdf5.h>
#include <stdint.h>

/* Turns off HDF5's automatic error-stack printing (once per process). */
void out_h5_quiet(void);

/* A new HDF5 file at path (truncated) that closes every object still open when it is
 * closed (H5F_CLOSE_STRONG), so that a failed write leaves nothing for HDF5 to flush at
 * exit. fcpl may be H5P_DEFAULT. */
hid_t out_file_create(const char *path, hid_t fcpl);
/* The same in memory (HDF5's core driver, nothing written to disk). HDF5 opens name once
 * to look for an open file of that name: give one that cannot be opened. */
hid_t out_file_create_mem(const char *name);
/* The bytes of the file f (an in-memory file, say), malloc'ed; closes f either way. */
int out_file_image(hid_t f, void **buf, size_t *n);
/* Opens an existing file for writing, closing as out_file_create's files do. */
hid_t out_file_open_rw(const char *path);
/* Flushes and closes f; -1 when that failed (disk full, quota, file size limit). The
 * space the flush needs is reserved first; when it cannot be, nothing more is written
 * (out_file_discard). */
int out_file_close(hid_t f);
/* Closes f after a failed write without writing anything more (its descriptor is pointed
 * at /dev/null first, so that HDF5 cannot fail, or crash at exit, flushing it). */
void out_file_discard(hid_t f);

/* Scalar vlen UTF-8 string attribute (replaces an existing one). */
int out_attr_str(hid_t loc, const char *name, const char *value);
/* encoding-type / encoding-version pair. */
int out_encoding(hid_t loc, const char *type, const char *version);
/* 1-D vlen UTF-8 string attribute; n == 0 writes an empty f64 array (anndata's way). */
int out_attr_strs(hid_t loc, const char *name, char *const *items, int64_t n);
/* Scalar h5py bool (enum of i8: FALSE = 0, TRUE = 1). */
int out_attr_bool(hid_t loc, const char *name, int value);
/* 1-D i64 attribute. */
int out_attr_i64s(hid_t loc, const char *name, const int64_t *v, int n);
/* Reads a string attribute (vlen or fixed) into a malloc'ed string; NULL when absent. */
char *out_attr_get_str(hid_t loc, const char *name);

/* Reads a 1-D string attribute (vlen or fixed) into malloc'ed strings; an absent or
 * numeric (empty) attribute gives *n = 0. Returns NULL with *n = -1 on error. */
char **out_attr_get_strs(hid_t loc, const char *name, int64_t *n);

/* The h5py bool enum type (caller closes). */
hid_t out_bool_type(void);
/* A vlen UTF-8 string type (caller closes). */
hid_t out_vlen_str_type(void);

/* Group whose links and attributes are tracked in creation order (dataframes). */
hid_t out_group_tracked(hid_t loc, const char *name);
/* A dict group (encoding dict 0.1.0), opened if it exists. */
hid_t out_dict_group(hid_t loc, const char *name);

/* 1-D vlen UTF-8 string dataset with string-array encoding. items == NULL generates
 * "<prefix><i>" names (written in slices, so 10M names never sit in memory). */
int out_string_array(hid_t loc, const char *name, char *const *items, int64_t n,
                     const char *prefix);
/* Dense numeric dataset (1-D when cols < 0, else rows x cols) with array encoding. */
int out_array(hid_t loc, const char *name, hid_t mem_type, hid_t file_type, const void *data,
              int64_t rows, int64_t cols);

#endif
