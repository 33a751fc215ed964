/* io/h5util.c h5u_read_slab_inflate (chunks read raw, inflated on the OpenMP team) against
 * HDF5's own read: bitwise the same slabs for every start and length pattern, 1-3 threads,
 * partial last chunk, a dataset appended in pieces, shuffle + deflate; the fallbacks (a
 * stored type that needs conversion, shuffle alone, no compression) give the same; a
 * damaged chunk fails. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/h5util.h"

static int failures = 0, checks = 0;
#define CHECK(c, ...)                                                                              \
    do {                                                                                           \
        checks++;                                                                                  \
        if (!(c)) {                                                                                \
            failures++;                                                                            \
            fprintf(stderr, "FAIL: " __VA_ARGS__);                                                 \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

enum { N = 25123, CHUNK = 1000 };

/* A 1-D dataset of N values (file type ft, written from float or int32 values), chunked,
 * with the given filters; `pieces` > 1 writes it by extending it that many times. */
static void make(hid_t f, const char *name, hid_t ft, int deflate, int shuffle, int pieces,
                 const void *vals, hid_t mt) {
    hsize_t dim = pieces > 1 ? 0 : N, maxd = H5S_UNLIMITED, ch = CHUNK;
    hid_t s = H5Screate_simple(1, &dim, &maxd), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &ch);
    if (shuffle) H5Pset_shuffle(dcpl);
    if (deflate) H5Pset_deflate(dcpl, 1);
    hid_t d = H5Dcreate2(f, name, ft, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    size_t es = H5Tget_size(mt);
    for (int p = 0; p < pieces; p++) {
        hsize_t lo = (hsize_t)N * p / pieces, hi = (hsize_t)N * (p + 1) / pieces, n = hi - lo;
        if (pieces > 1) H5Dset_extent(d, &hi);
        hid_t fs = H5Dget_space(d), ms = H5Screate_simple(1, &n, NULL);
        H5Sselect_hyperslab(fs, H5S_SELECT_SET, &lo, NULL, &n, NULL);
        H5Dwrite(d, mt, ms, fs, H5P_DEFAULT, (const char *)vals + lo * es);
        H5Sclose(ms), H5Sclose(fs);
    }
    H5Dclose(d), H5Pclose(dcpl), H5Sclose(s);
}

/* Every pattern of (start, length) against h5u_read_slab, on 1, 2 and 3 threads; `fast`:
 * whether the chunks must have gone through the parallel inflation (else the fallback). */
static void compare(hid_t f, const char *name, hid_t mt, int fast) {
    int64_t before = h5u_inflated_chunks();
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    size_t es = H5Tget_size(mt);
    char *want = malloc((size_t)N * es), *got = malloc((size_t)N * es);
    static const int64_t starts[] = {0, 1, 999, 1000, 1001, 4321, 12000, 22999, 23000};
    static const int64_t lens[] = {1, 1999, 2000, 2001, 3000, 5555, 10000, 20000};
    for (int t = 1; t <= 3; t++) {
        omp_set_num_threads(t);
        for (size_t i = 0; i < sizeof starts / sizeof *starts; i++)
            for (size_t j = 0; j < sizeof lens / sizeof *lens + 1; j++) {
                int64_t lo = starts[i], n = j < sizeof lens / sizeof *lens ? lens[j] : N - lo;
                if (lo + n > N) continue;
                memset(got, 0x5a, (size_t)N * es);
                int ra = h5u_read_slab(d, mt, lo, n, want),
                    rb = h5u_read_slab_inflate(d, mt, lo, n, got);
                CHECK(ra == 0 && rb == 0, "%s: read failed (%d, %d)", name, ra, rb);
                CHECK(memcmp(want, got, (size_t)n * es) == 0,
                      "%s: [%lld, +%lld) differs, %d threads", name, (long long)lo, (long long)n,
                      t);
                CHECK(lo + n == N || ((unsigned char *)got)[(size_t)n * es] == 0x5a,
                      "%s: wrote past the slab", name);
            }
    }
    free(want), free(got);
    H5Dclose(d);
    int64_t used = h5u_inflated_chunks() - before;
    CHECK(fast ? used > 0 : used == 0, "%s: %lld chunks inflated in parallel, expected %s", name,
          (long long)used, fast ? "some" : "none");
}

int main(int argc, char **argv) {
    h5u_init();
    const char *path = argc > 1 ? argv[1] : "read_inflate.h5";
    float *fv = malloc(sizeof(float) * N);
    int32_t *iv = malloc(sizeof(int32_t) * N);
    for (int i = 0; i < N; i++) {
        fv[i] = (float)((i * 7919) % 13) + 0.25f * (float)(i % 3); /* compressible, not constant */
        iv[i] = (int32_t)(((int64_t)i * 104729) % 2000);
    }
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    make(f, "gz_f32", H5T_IEEE_F32LE, 1, 0, 1, fv, H5T_NATIVE_FLOAT);
    make(f, "gz_i32_pieces", H5T_STD_I32LE, 1, 0, 7, iv, H5T_NATIVE_INT32);
    /* shuffle + deflate (h5py's shuffle=True), float and int, one piece and three */
    make(f, "gz_shuffle", H5T_IEEE_F32LE, 1, 1, 1, fv, H5T_NATIVE_FLOAT);
    make(f, "gz_shuffle_i32", H5T_STD_I32LE, 1, 1, 3, iv, H5T_NATIVE_INT32);
    /* HDF5's own read: a stored type that needs conversion, no filter, shuffle alone */
    make(f, "gz_i64", H5T_STD_I64LE, 1, 0, 1, iv, H5T_NATIVE_INT32);
    make(f, "plain_f32", H5T_IEEE_F32LE, 0, 0, 1, fv, H5T_NATIVE_FLOAT);
    make(f, "shuffle_only", H5T_IEEE_F32LE, 0, 1, 1, fv, H5T_NATIVE_FLOAT);
    make(f, "damaged", H5T_IEEE_F32LE, 1, 0, 1, fv, H5T_NATIVE_FLOAT);
    /* chunk 5 of "damaged" replaced by bytes that are no deflate stream */
    hid_t d = H5Dopen2(f, "damaged", H5P_DEFAULT);
    hsize_t off = 5 * CHUNK;
    unsigned char junk[64];
    memset(junk, 0xab, sizeof junk);
    CHECK(H5Dwrite_chunk(d, H5P_DEFAULT, 0, &off, sizeof junk, junk) >= 0, "damaging a chunk");
    H5Dclose(d);
    H5Fclose(f);

    f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    compare(f, "gz_f32", H5T_NATIVE_FLOAT, 1);
    compare(f, "gz_i32_pieces", H5T_NATIVE_INT32, 1);
    compare(f, "gz_shuffle", H5T_NATIVE_FLOAT, 1);
    compare(f, "gz_i64", H5T_NATIVE_INT32, 0);
    compare(f, "plain_f32", H5T_NATIVE_FLOAT, 0);
    compare(f, "shuffle_only", H5T_NATIVE_FLOAT, 0);
    compare(f, "gz_shuffle_i32", H5T_NATIVE_INT32, 1);
    d = H5Dopen2(f, "damaged", H5P_DEFAULT);
    float *buf = malloc(sizeof(float) * N);
    omp_set_num_threads(2);
    CHECK(h5u_read_slab_inflate(d, H5T_NATIVE_FLOAT, 0, N, buf) != 0, "a damaged chunk must fail");
    CHECK(h5u_read_slab_inflate(d, H5T_NATIVE_FLOAT, 0, 4 * CHUNK, buf) == 0 &&
              memcmp(buf, fv, sizeof(float) * 4 * CHUNK) == 0,
          "the chunks before the damaged one still read");
    H5Dclose(d);
    H5Fclose(f);
    free(buf), free(fv), free(iv);
    remove(path);
    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
