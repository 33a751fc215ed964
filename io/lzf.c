/* LZF decoder for HDF5 (filter id 32000, as written by h5py's compression="lzf").
 * Only decoding is registered: atlasvi never writes LZF. */
#include <errno.h>
#include <hdf5.h>
#include <lzf.h>
#include <stdlib.h>

#include "io/input.h"

#define AV_LZF_FILTER 32000

static size_t lzf_filter(unsigned flags, size_t cd_nelmts, const unsigned cd_values[],
                         size_t nbytes, size_t *buf_size, void **buf) {
    if (!(flags & H5Z_FLAG_REVERSE)) return 0; /* no encoder */
    /* h5py stores the uncompressed chunk size in cd_values[2]; guess and grow otherwise. */
    size_t out_size = (cd_nelmts >= 3 && cd_values[2] > 0) ? cd_values[2] : 4 * nbytes + 64;
    for (int attempt = 0; attempt < 8; attempt++) {
        void *out = malloc(out_size);
        if (!out) return 0;
        errno = 0;
        unsigned n = lzf_decompress(*buf, (unsigned)nbytes, out, (unsigned)out_size);
        if (n > 0) {
            free(*buf);
            *buf = out;
            *buf_size = out_size;
            return n;
        }
        free(out);
        if (errno != E2BIG) return 0;
        out_size *= 2;
    }
    return 0;
}

int av_register_lzf(void) {
    if (H5Zfilter_avail(AV_LZF_FILTER) > 0) {
        unsigned info = 0;
        if (H5Zget_filter_info(AV_LZF_FILTER, &info) >= 0 &&
            (info & H5Z_FILTER_CONFIG_DECODE_ENABLED))
            return 0;
    }
    static const H5Z_class2_t cls = {
        H5Z_CLASS_T_VERS, (H5Z_filter_t)AV_LZF_FILTER, 0, 1, "lzf", NULL, NULL, lzf_filter};
    return H5Zregister(&cls) < 0 ? -1 : 0;
}
