#include "io/out_h5.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "src/util.h"

void out_h5_quiet(void) {
    static int done = 0;
    if (done) return;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    done = 1;
}

static hid_t strong_fapl(void) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
    return fapl;
}

hid_t out_file_create(const char *path, hid_t fcpl) {
    hid_t fapl = strong_fapl();
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, fcpl, fapl);
    H5Pclose(fapl);
    return f;
}

hid_t out_file_create_mem(const char *name) {
    hid_t fapl = strong_fapl();
    H5Pset_fapl_core(fapl, 1 << 20, 0);
    hid_t f = H5Fcreate(name, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    return f;
}

int out_file_image(hid_t f, void **buf, size_t *n) {
    *buf = NULL;
    *n = 0;
    ssize_t size = H5Fflush(f, H5F_SCOPE_GLOBAL) < 0 ? -1 : H5Fget_file_image(f, NULL, 0);
    if (size > 0) {
        *buf = av_malloc((size_t)size);
        if (H5Fget_file_image(f, *buf, (size_t)size) != size) size = -1;
    }
    if (H5Fclose(f) < 0 || size <= 0) {
        free(*buf);
        *buf = NULL;
        return -1;
    }
    *n = (size_t)size;
    return 0;
}

hid_t out_file_open_rw(const char *path) {
    hid_t fapl = strong_fapl();
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, fapl);
    H5Pclose(fapl);
    return f;
}

/* An anonymous file in memory for HDF5 to finish a failed file into (a sparse file: only
 * the metadata it still writes takes memory); /dev/null where memfd is not available. */
static int scratch_fd(void) {
    int fd = memfd_create("atlasvi-discard", 0);
    return fd >= 0 ? fd : open("/dev/null", O_RDWR);
}

/* The descriptor under f (the sec2 driver), or -1. */
static int file_fd(hid_t f) {
    void *handle = NULL;
    if (H5Fget_vfd_handle(f, H5P_DEFAULT, &handle) < 0 || !handle) return -1;
    return *(int *)handle;
}

void out_file_discard(hid_t f) {
    int fd = file_fd(f), scratch = fd >= 0 ? scratch_fd() : -1;
    if (scratch >= 0) {
        dup2(scratch, fd);
        close(scratch);
    }
    /* a soft file size limit (the failure, maybe) would stop the scratch file too */
    struct rlimit lim, raised;
    int have = getrlimit(RLIMIT_FSIZE, &lim) == 0;
    raised = lim;
    raised.rlim_cur = lim.rlim_max;
    if (have) setrlimit(RLIMIT_FSIZE, &raised);
    H5Fclose(f);
    if (have) setrlimit(RLIMIT_FSIZE, &lim);
}

/* Disk space for everything HDF5 may still write at close (the file's allocated extent
 * plus a margin), so that the final flush cannot fail: HDF5 1.10 cannot close a file
 * after a failed flush (and crashes at exit). Filesystems without fallocate pass. The
 * file may grow by the margin: *eoa is the size to cut it back to after closing. */
static int reserve_space(hid_t f, haddr_t *eoa) {
    int fd = file_fd(f);
    if (fd < 0 || H5Fget_eoa(f, eoa) < 0) return 0;
    if (fallocate(fd, 0, 0, (off_t)*eoa + (64 << 10)) == 0) return 0;
    return errno == EOPNOTSUPP || errno == ENOSYS ? 0 : -1;
}

/* The size of the regular file name, or -1. */
static off_t file_size(const char *name) {
    struct stat st;
    return stat(name, &st) == 0 && S_ISREG(st.st_mode) ? st.st_size : -1;
}

int out_file_close(hid_t f) {
    haddr_t eoa = HADDR_UNDEF;
    char name[4096];
    ssize_t nl = H5Fget_name(f, name, sizeof name);
    off_t before = nl > 0 && (size_t)nl < sizeof name ? file_size(name) : -1;
    if (reserve_space(f, &eoa)) {
        out_file_discard(f);
        return -1;
    }
    herr_t fl = H5Fflush(f, H5F_SCOPE_GLOBAL);
    if (fl >= 0) H5Fget_eoa(f, &eoa);
    if (H5Fclose(f) < 0 || fl < 0) return -1;
    if (before < 0 || eoa == HADDR_UNDEF) return 0;
    /* cut the reserve off again (never below what the file held before) */
    off_t keep = (off_t)eoa > before ? (off_t)eoa : before;
    return file_size(name) > keep && truncate(name, keep) != 0 ? -1 : 0;
}

hid_t out_vlen_str_type(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    return t;
}

hid_t out_bool_type(void) {
    hid_t t = H5Tenum_create(H5T_STD_I8LE);
    int8_t v = 0;
    H5Tenum_insert(t, "FALSE", &v);
    v = 1;
    H5Tenum_insert(t, "TRUE", &v);
    return t;
}

static int write_attr(hid_t loc, const char *name, hid_t type, hid_t space, const void *buf) {
    if (H5Aexists(loc, name) > 0 && H5Adelete(loc, name) < 0) return -1;
    hid_t a = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0) return -1;
    herr_t rc = H5Awrite(a, type, buf);
    H5Aclose(a);
    return rc < 0 ? -1 : 0;
}

int out_attr_str(hid_t loc, const char *name, const char *value) {
    hid_t t = out_vlen_str_type(), s = H5Screate(H5S_SCALAR);
    int rc = write_attr(loc, name, t, s, &value);
    H5Sclose(s);
    H5Tclose(t);
    return rc;
}

int out_encoding(hid_t loc, const char *type, const char *version) {
    if (out_attr_str(loc, "encoding-type", type)) return -1;
    return out_attr_str(loc, "encoding-version", version);
}

int out_attr_strs(hid_t loc, const char *name, char *const *items, int64_t n) {
    hsize_t dim = (hsize_t)n;
    hid_t s = H5Screate_simple(1, &dim, NULL);
    int rc;
    if (n == 0) {
        double none = 0;
        rc = write_attr(loc, name, H5T_IEEE_F64LE, s, &none);
    } else {
        hid_t t = out_vlen_str_type();
        rc = write_attr(loc, name, t, s, items);
        H5Tclose(t);
    }
    H5Sclose(s);
    return rc;
}

int out_attr_bool(hid_t loc, const char *name, int value) {
    hid_t t = out_bool_type(), s = H5Screate(H5S_SCALAR);
    int8_t v = value ? 1 : 0;
    int rc = write_attr(loc, name, t, s, &v);
    H5Sclose(s);
    H5Tclose(t);
    return rc;
}

int out_attr_i64s(hid_t loc, const char *name, const int64_t *v, int n) {
    hsize_t dim = (hsize_t)n;
    hid_t s = H5Screate_simple(1, &dim, NULL);
    int rc = write_attr(loc, name, H5T_STD_I64LE, s, v);
    H5Sclose(s);
    return rc;
}

char *out_attr_get_str(hid_t loc, const char *name) {
    if (H5Aexists(loc, name) <= 0) return NULL;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return NULL;
    hid_t ft = H5Aget_type(a), sp = H5Aget_space(a);
    char *out = NULL;
    if (H5Tget_class(ft) == H5T_STRING && H5Sget_simple_extent_npoints(sp) == 1) {
        if (H5Tis_variable_str(ft) > 0) {
            hid_t mt = out_vlen_str_type();
            char *v = NULL;
            if (H5Aread(a, mt, &v) >= 0 && v) {
                out = av_strdup(v);
                H5free_memory(v);
            }
            H5Tclose(mt);
        } else {
            size_t n = H5Tget_size(ft);
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, n + 1);
            char *v = av_calloc(n + 2, 1);
            if (H5Aread(a, mt, v) >= 0)
                out = v;
            else
                free(v);
            H5Tclose(mt);
        }
    }
    H5Sclose(sp);
    H5Tclose(ft);
    H5Aclose(a);
    return out;
}

hid_t out_group_tracked(hid_t loc, const char *name) {
    hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
    H5Pset_link_creation_order(gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
    H5Pset_attr_creation_order(gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
    hid_t g = H5Gcreate2(loc, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    H5Pclose(gcpl);
    return g;
}

hid_t out_dict_group(hid_t loc, const char *name) {
    hid_t g;
    if (H5Lexists(loc, name, H5P_DEFAULT) > 0) return H5Gopen2(loc, name, H5P_DEFAULT);
    g = H5Gcreate2(loc, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return g;
    if (out_encoding(g, "dict", "0.1.0")) {
        H5Gclose(g);
        return -1;
    }
    return g;
}

#define OUT_SLICE ((int64_t)1 << 18)

int out_string_array(hid_t loc, const char *name, char *const *items, int64_t n,
                     const char *prefix) {
    hsize_t dim = (hsize_t)n;
    hid_t t = out_vlen_str_type(), fs = H5Screate_simple(1, &dim, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (!items && n > OUT_SLICE) {
        hsize_t chunk = 65536;
        H5Pset_chunk(dcpl, 1, &chunk);
    }
    hid_t d = H5Dcreate2(loc, name, t, fs, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    int rc = d < 0 ? -1 : 0;
    if (!rc && n > 0 && items) {
        rc = H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, items) < 0 ? -1 : 0;
    } else if (!rc && n > 0) {
        int64_t slice = n < OUT_SLICE ? n : OUT_SLICE;
        char **names = av_malloc((size_t)slice * sizeof *names);
        char *buf = av_malloc((size_t)slice * (strlen(prefix) + 24));
        for (int64_t lo = 0; lo < n && !rc; lo += slice) {
            int64_t m = n - lo < slice ? n - lo : slice;
            char *p = buf;
            for (int64_t i = 0; i < m; i++) {
                names[i] = p;
                p += sprintf(p, "%s%lld", prefix, (long long)(lo + i)) + 1;
            }
            hsize_t start = (hsize_t)lo, count = (hsize_t)m;
            hid_t ms = H5Screate_simple(1, &count, NULL);
            H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL);
            if (H5Dwrite(d, t, ms, fs, H5P_DEFAULT, names) < 0) rc = -1;
            H5Sclose(ms);
        }
        free(names);
        free(buf);
    }
    if (!rc) rc = out_encoding(d, "string-array", "0.2.0");
    if (d >= 0) H5Dclose(d);
    H5Sclose(fs);
    H5Tclose(t);
    return rc;
}

int out_array(hid_t loc, const char *name, hid_t mem_type, hid_t file_type, const void *data,
              int64_t rows, int64_t cols) {
    hsize_t dims[2] = {(hsize_t)rows, (hsize_t)(cols < 0 ? 0 : cols)};
    hid_t fs = H5Screate_simple(cols < 0 ? 1 : 2, dims, NULL);
    hid_t d = H5Dcreate2(loc, name, file_type, fs, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = d < 0 ? -1 : 0;
    int64_t total = rows * (cols < 0 ? 1 : cols);
    if (!rc && total > 0)
        rc = H5Dwrite(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0 ? -1 : 0;
    if (!rc) rc = out_encoding(d, "array", "0.2.0");
    if (d >= 0) H5Dclose(d);
    H5Sclose(fs);
    return rc;
}

char **out_attr_get_strs(hid_t loc, const char *name, int64_t *n) {
    *n = 0;
    if (H5Aexists(loc, name) <= 0) return NULL;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) {
        *n = -1;
        return NULL;
    }
    hid_t ft = H5Aget_type(a), sp = H5Aget_space(a);
    hssize_t m = H5Sget_simple_extent_npoints(sp);
    char **out = NULL;
    if (H5Tget_class(ft) != H5T_STRING || m <= 0) {
        *n = m < 0 ? -1 : (H5Tget_class(ft) == H5T_STRING || m == 0 ? 0 : -1);
    } else if (H5Tis_variable_str(ft) > 0) {
        hid_t mt = out_vlen_str_type();
        char **v = av_calloc((size_t)m, sizeof *v);
        if (H5Aread(a, mt, v) >= 0) {
            out = av_calloc((size_t)m, sizeof *out);
            for (hssize_t i = 0; i < m; i++) out[i] = av_strdup(v[i] ? v[i] : "");
            H5Dvlen_reclaim(mt, sp, H5P_DEFAULT, v);
            *n = m;
        } else {
            *n = -1;
        }
        free(v);
        H5Tclose(mt);
    } else {
        size_t w = H5Tget_size(ft);
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, w);
        H5Tset_strpad(mt, H5T_STR_NULLPAD);
        char *buf = av_calloc((size_t)m * w + 1, 1);
        if (H5Aread(a, mt, buf) >= 0) {
            out = av_calloc((size_t)m, sizeof *out);
            for (hssize_t i = 0; i < m; i++) {
                out[i] = av_calloc(w + 1, 1);
                memcpy(out[i], buf + (size_t)i * w, w);
            }
            *n = m;
        } else {
            *n = -1;
        }
        free(buf);
        H5Tclose(mt);
    }
    H5Sclose(sp);
    H5Tclose(ft);
    H5Aclose(a);
    return out;
}
