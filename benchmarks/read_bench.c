/* How fast atlasvi reads its cell shards: what `atlasvi train` does before training
 * (src/app_setup.c av_setup_load), timed alone. Rank 0 reads the row pointer and plans
 * shards balanced by non-zeros (dist_plan_shards), every rank then opens the file and
 * reads its rows with av_input_read_rows, the same io/ calls as the trainer (the count
 * checks and the registry's obs columns are left out).
 *
 *   mpiexec -n N read_bench FILE.h5ad [--evict] [--chunk-cells C] [--repeats R]
 *
 * --evict: before each timed read rank 0 drops the file from the page cache (fsync,
 *   then posix_fadvise DONTNEED: unprivileged), so the read is cold.
 * --chunk-cells C: read each shard in pieces of C cells (as `train --stream` does); 0
 *   (default) reads the whole shard in one call, as train does without --stream.
 * --repeats R: R timed reads, each reported, the fastest in the JSON line.
 *
 * Prints per rank the cells, non-zeros and seconds, and one line
 *   READ_JSON {...}
 * with the file size, the stored (allocated, possibly compressed) and logical bytes of
 * X/data, X/indices and X/indptr, the payload bytes read (non-zeros x 8 + indptr) and the
 * seconds of the slowest rank (barrier to barrier). Built by benchmarks/build_read_bench.sh
 * against a build directory's static libraries. */
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dist/dist.h"
#include "io/input.h"
#include "src/data.h"
#include "src/util.h"

static int evict(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    fsync(fd); /* DONTNEED leaves dirty pages (a freshly written file) in the cache */
    int rc = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    return rc;
}

/* stored (allocated) and logical bytes of one dataset; 0 when it is absent */
static void dset_bytes(hid_t f, const char *name, double *stored, double *logical, char *dtype,
                       size_t dtype_len) {
    *stored = *logical = 0;
    if (H5Lexists(f, name, H5P_DEFAULT) <= 0) return;
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) return;
    hid_t s = H5Dget_space(d), t = H5Dget_type(d);
    *stored = (double)H5Dget_storage_size(d);
    *logical = (double)H5Sget_simple_extent_npoints(s) * (double)H5Tget_size(t);
    hid_t pl = H5Dget_create_plist(d);
    int nf = H5Pget_nfilters(pl);
    if (dtype && dtype_len) {
        dtype[0] = 0;
        for (int i = 0; i < nf; i++) {
            unsigned flags = 0, cd[8];
            size_t ncd = 8;
            char nm[64] = "";
            H5Z_filter_t id =
                H5Pget_filter2(pl, (unsigned)i, &flags, &ncd, cd, sizeof nm, nm, NULL);
            size_t l = strlen(dtype);
            snprintf(dtype + l, dtype_len - l, "%s%s", l ? "+" : "",
                     id == H5Z_FILTER_DEFLATE   ? "gzip"
                     : id == H5Z_FILTER_SHUFFLE ? "shuffle"
                     : id == 32000              ? "lzf"
                                                : "other");
        }
        if (!dtype[0]) snprintf(dtype, dtype_len, "none");
    }
    H5Pclose(pl);
    H5Tclose(t);
    H5Sclose(s);
    H5Dclose(d);
}

int main(int argc, char **argv) {
    dist_init(&argc, &argv);
    int rank = dist_rank(), P = dist_size();
    const char *path = NULL;
    int do_evict = 0, repeats = 1;
    int64_t chunk = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--evict"))
            do_evict = 1;
        else if (!strcmp(argv[i], "--chunk-cells") && i + 1 < argc)
            chunk = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--repeats") && i + 1 < argc)
            repeats = atoi(argv[++i]);
        else if (argv[i][0] != '-' && !path)
            path = argv[i];
        else {
            if (rank == 0)
                fprintf(stderr, "usage: read_bench FILE.h5ad [--evict] [--chunk-cells C] "
                                "[--repeats R]\n");
            dist_finalize();
            return 2;
        }
    }
    if (!path || repeats < 1) {
        if (rank == 0) fprintf(stderr, "read_bench: give one .h5ad file\n");
        dist_finalize();
        return 2;
    }
    char err[1024] = "";
    /* rank 0: shape, row pointer, shard plan, as av_setup_load does */
    int64_t n_obs = 0, *indptr = NULL;
    int rc = 0;
    double st[3] = {0}, lg[3] = {0}, file_bytes = 0;
    char filt[3][32] = {"", "", ""};
    char matrix[64] = "";
    if (rank == 0) {
        AvInput in = {0};
        rc = av_input_open(&in, path, NULL, err);
        if (!rc) {
            n_obs = in.n_obs;
            snprintf(matrix, sizeof matrix, "%s %s %s", av_format_name(in.format),
                     in.matrix_name ? in.matrix_name : "?", av_input_storage(&in));
            indptr = av_malloc(sizeof(int64_t) * (size_t)(n_obs + 1));
            rc = av_input_read_indptr(&in, indptr, err);
        }
        av_input_close(&in);
        struct stat sb;
        if (!stat(path, &sb)) file_bytes = (double)sb.st_size;
        hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        if (f >= 0) {
            const char *names[3] = {"X/data", "X/indices", "X/indptr"};
            for (int k = 0; k < 3; k++)
                dset_bytes(f, names[k], &st[k], &lg[k], filt[k], sizeof filt[k]);
            H5Fclose(f);
        }
    }
    if (dist_any_failed(rc, err)) {
        dist_finalize();
        return 1;
    }
    dist_bcast(&n_obs, sizeof n_obs, 0);
    int64_t *bounds = av_malloc(sizeof(int64_t) * (size_t)(P + 1));
    int64_t nnz_total = 0;
    if (rank == 0) {
        dist_plan_shards(indptr, n_obs, P, bounds);
        nnz_total = indptr[n_obs] - indptr[0];
    }
    free(indptr);
    dist_bcast(bounds, (int64_t)sizeof(int64_t) * (P + 1), 0);
    dist_bcast(&nnz_total, sizeof nnz_total, 0);
    int64_t lo = bounds[rank], hi = bounds[rank + 1];
    free(bounds);

    double best = 1e30, *all = av_malloc(sizeof(double) * (size_t)repeats);
    int64_t nnz = 0;
    double my_s = 0;
    for (int r = 0; r < repeats && !rc; r++) {
        if (do_evict && rank == 0 && evict(path))
            fprintf(stderr, "read_bench: posix_fadvise failed on %s\n", path);
        dist_barrier();
        double t0 = av_now();
        AvInput in = {0};
        AvCsr x;
        memset(&x, 0, sizeof x);
        nnz = 0;
        rc = av_input_open(&in, path, NULL, err);
        int64_t step = chunk > 0 ? chunk : (hi - lo > 0 ? hi - lo : 1);
        for (int64_t a = lo; a < hi && !rc; a += step) {
            int64_t b = a + step < hi ? a + step : hi;
            rc = av_input_read_rows(&in, a, b, &x, err);
            if (!rc) nnz += x.indptr[x.n_rows];
            av_csr_free(&x);
        }
        av_input_close(&in);
        double dt = av_now() - t0;
        my_s = dt;
        dist_barrier();
        double slow = av_now() - t0; /* barrier to barrier: the slowest rank */
        dist_allreduce_max_f64(&slow, 1);
        all[r] = slow;
        if (slow < best) best = slow;
    }
    if (dist_any_failed(rc, err)) {
        dist_finalize();
        return 1;
    }
    int64_t *rows = av_malloc(sizeof(int64_t) * (size_t)P),
            *nnzs = av_malloc(sizeof(int64_t) * (size_t)P),
            *us = av_malloc(sizeof(int64_t) * (size_t)P);
    dist_allgather_i64(hi - lo, rows);
    dist_allgather_i64(nnz, nnzs);
    dist_allgather_i64((int64_t)(my_s * 1e6), us);
    if (rank == 0) {
        int64_t nnz_read = 0;
        for (int p = 0; p < P; p++) {
            nnz_read += nnzs[p];
            printf("read_bench: rank %d: %lld cells, %lld non-zeros, %.3f s (last read)\n", p,
                   (long long)rows[p], (long long)nnzs[p], 1e-6 * (double)us[p]);
        }
        /* payload as stored: data (float32) + indices (int32) + indptr (int64) */
        double payload = (double)nnz_read * 8.0 + (double)(n_obs + 1) * 8.0;
        double stored = st[0] + st[1] + st[2], logical = lg[0] + lg[1] + lg[2];
        printf("read_bench: %s, %d rank(s), %s, %lld cells, %lld non-zeros, %.1f MB payload "
               "(%.1f MB stored in the file, filters %s): %.3f s = %.0f MB/s payload, %.0f "
               "MB/s stored, %.0f cells/s\n",
               path, P, do_evict ? "cold" : "warm", (long long)n_obs, (long long)nnz_read,
               payload / 1e6, stored / 1e6, filt[0], best, payload / best / 1e6,
               stored / best / 1e6, (double)n_obs / best);
        printf("READ_JSON {\"ranks\": %d, \"cold\": %s, \"chunk_cells\": %lld, \"n_cells\": %lld, "
               "\"nnz\": %lld, \"nnz_indptr\": %lld, \"matrix\": \"%s\", \"filters\": \"%s\", "
               "\"file_bytes\": %.0f, \"x_stored_bytes\": %.0f, \"x_logical_bytes\": %.0f, "
               "\"payload_bytes\": %.0f, \"seconds\": %.6f, \"seconds_all\": [",
               P, do_evict ? "true" : "false", (long long)chunk, (long long)n_obs,
               (long long)nnz_read, (long long)nnz_total, matrix, filt[0], file_bytes, stored,
               logical, payload, best);
        for (int r = 0; r < repeats; r++) printf("%s%.6f", r ? ", " : "", all[r]);
        printf("], \"rank_seconds\": [");
        for (int p = 0; p < P; p++) printf("%s%.6f", p ? ", " : "", 1e-6 * (double)us[p]);
        printf("], \"rank_cells\": [");
        for (int p = 0; p < P; p++) printf("%s%lld", p ? ", " : "", (long long)rows[p]);
        printf("]}\n");
        fflush(stdout);
    }
    free(rows), free(nnzs), free(us), free(all);
    dist_finalize();
    return 0;
}
