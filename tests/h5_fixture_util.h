/* HDF5 elements the way anndata 0.12/0.13 writes them, for test fixtures written with the
 * C API (no Python): string-array datasets, nullable-string-array and categorical groups,
 * dataframe groups. Shared by tests/test_io_hostile.c and tests/make_bad_inputs.c. */
#ifndef AV_TEST_H5_FIXTURE_UTIL_H
#define AV_TEST_H5_FIXTURE_UTIL_H
#include <hdf5.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline hid_t fx_vlen_str(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

/* A scalar UTF-8 string attribute. */
static inline void fx_attr(hid_t loc, const char *name, const char *value) {
    hid_t t = fx_vlen_str(), s = H5Screate(H5S_SCALAR);
    if (H5Aexists(loc, name) > 0) H5Adelete(loc, name);
    hid_t a = H5Acreate2(loc, name, t, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, &value);
    H5Aclose(a);
    H5Sclose(s);
    H5Tclose(t);
}

static inline void fx_encoding(hid_t loc, const char *type, const char *version) {
    fx_attr(loc, "encoding-type", type);
    fx_attr(loc, "encoding-version", version);
}

/* A 1-D vlen string dataset; string-array encoding when encoded. */
static inline void fx_strings(hid_t loc, const char *name, const char *const *items, int64_t n,
                              int encoded) {
    hsize_t dim = (hsize_t)n;
    hid_t t = fx_vlen_str(), s = H5Screate_simple(1, &dim, NULL);
    hid_t d = H5Dcreate2(loc, name, t, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (n) H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, items);
    if (encoded) fx_encoding(d, "string-array", "0.2.0");
    H5Dclose(d);
    H5Sclose(s);
    H5Tclose(t);
}

/* A 1-D dataset of native type mem written as file type ft. */
static inline void fx_array(hid_t loc, const char *name, hid_t mem, hid_t ft, const void *v,
                            int64_t n) {
    hsize_t dim = (hsize_t)n;
    hid_t s = H5Screate_simple(1, &dim, NULL);
    hid_t d = H5Dcreate2(loc, name, ft, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (n) H5Dwrite(d, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    fx_encoding(d, "array", "0.2.0");
    H5Dclose(d);
    H5Sclose(s);
}

/* anndata's nullable-string-array (pandas StringDtype): values + bool mask (1 = missing). */
static inline void fx_nullable_strings(hid_t loc, const char *name, const char *const *items,
                                       const uint8_t *mask, int64_t n) {
    hid_t g = H5Gcreate2(loc, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    fx_encoding(g, "nullable-string-array", "0.1.0");
    fx_strings(g, "values", items, n, 0);
    uint8_t *zeros = calloc((size_t)n + 1, 1);
    hsize_t dim = (hsize_t)n;
    hid_t s = H5Screate_simple(1, &dim, NULL);
    hid_t d = H5Dcreate2(g, "mask", H5T_NATIVE_HBOOL, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (n) H5Dwrite(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, mask ? mask : zeros);
    H5Dclose(d);
    H5Sclose(s);
    free(zeros);
    H5Gclose(g);
}

/* A categorical of strings: int8 codes and string-array categories. */
static inline void fx_categorical(hid_t loc, const char *name, const int8_t *codes, int64_t n,
                                  const char *const *cats, int64_t n_cats) {
    hid_t g = H5Gcreate2(loc, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    fx_encoding(g, "categorical", "0.2.0");
    fx_array(g, "codes", H5T_NATIVE_INT8, H5T_STD_I8LE, codes, n);
    fx_strings(g, "categories", cats, n_cats, 1);
    H5Gclose(g);
}

/* A dataframe group whose index is the child "_index" (written by the caller). */
static inline hid_t fx_dataframe(hid_t loc, const char *name) {
    hid_t g = H5Gcreate2(loc, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    fx_encoding(g, "dataframe", "0.2.0");
    fx_attr(g, "_index", "_index");
    return g;
}

#endif
