#include "dist/dist.h"

#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/util.h"

static int g_rank = 0, g_size = 1, g_owns_mpi = 0;

int dist_init(int *argc, char ***argv) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        int provided;
        MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        g_owns_mpi = 1;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    return 0;
}

void dist_finalize(void) {
    int fin = 0;
    MPI_Finalized(&fin);
    if (g_owns_mpi && !fin) MPI_Finalize();
}

int dist_rank(void) { return g_rank; }
int dist_size(void) { return g_size; }
void dist_barrier(void) { MPI_Barrier(MPI_COMM_WORLD); }

/* MPI counts are int: large buffers go in pieces of at most 2^30 elements. */
#define DIST_PIECE ((int64_t)1 << 30)

static void allreduce(void *buf, int64_t n, MPI_Datatype t, size_t elem) {
    if (g_size == 1) return;
    char *p = buf;
    for (int64_t off = 0; off < n; off += DIST_PIECE) {
        int64_t m = n - off < DIST_PIECE ? n - off : DIST_PIECE;
        MPI_Allreduce(MPI_IN_PLACE, p + off * elem, (int)m, t, MPI_SUM, MPI_COMM_WORLD);
    }
}

void dist_allreduce_f32(float *buf, int64_t n) { allreduce(buf, n, MPI_FLOAT, sizeof *buf); }
void dist_allreduce_f64(double *buf, int64_t n) { allreduce(buf, n, MPI_DOUBLE, sizeof *buf); }
void dist_allreduce_i64(int64_t *buf, int64_t n) { allreduce(buf, n, MPI_INT64_T, sizeof *buf); }

void dist_bcast(void *buf, int64_t bytes, int root) {
    if (g_size == 1) return;
    char *p = buf;
    for (int64_t off = 0; off < bytes; off += DIST_PIECE) {
        int64_t m = bytes - off < DIST_PIECE ? bytes - off : DIST_PIECE;
        MPI_Bcast(p + off, (int)m, MPI_BYTE, root, MPI_COMM_WORLD);
    }
}

void dist_bcast_strings(char ***items, int64_t *n, int root) {
    if (g_size == 1) return;
    dist_bcast(n, sizeof *n, root);
    /* One buffer of NUL-terminated strings. */
    int64_t bytes = 0;
    if (g_rank == root)
        for (int64_t i = 0; i < *n; i++) bytes += (int64_t)strlen((*items)[i]) + 1;
    dist_bcast(&bytes, sizeof bytes, root);
    char *buf = av_malloc((size_t)bytes);
    if (g_rank == root) {
        char *p = buf;
        for (int64_t i = 0; i < *n; i++) {
            size_t l = strlen((*items)[i]) + 1;
            memcpy(p, (*items)[i], l);
            p += l;
        }
    }
    dist_bcast(buf, bytes, root);
    if (g_rank != root) {
        *items = av_malloc(sizeof(char *) * (size_t)(*n ? *n : 1));
        char *p = buf;
        for (int64_t i = 0; i < *n; i++) {
            (*items)[i] = av_strdup(p);
            p += strlen(p) + 1;
        }
    }
    free(buf);
}

int dist_any_failed(int failed, const char *msg) {
    int mine = failed ? g_rank : INT_MAX, lowest = mine;
    if (g_size > 1) MPI_Allreduce(&mine, &lowest, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (lowest == INT_MAX) return 0;
    if (lowest == g_rank) {
        fprintf(stderr, "atlasvi: error: %s\n", msg && *msg ? msg : "failed");
        fflush(stderr);
    }
    return 1;
}

void dist_gather_rows_f32(const float *local, int64_t local_rows, int64_t cols, float *out_root) {
    if (g_size == 1) {
        if (out_root != local) memcpy(out_root, local, sizeof(float) * (size_t)(local_rows * cols));
        return;
    }
    /* Point-to-point in rank order keeps counts in int64 (no 2^31 limit on the total). */
    if (g_rank == 0) {
        memcpy(out_root, local, sizeof(float) * (size_t)(local_rows * cols));
        int64_t off = local_rows * cols;
        for (int r = 1; r < g_size; r++) {
            int64_t rows;
            MPI_Recv(&rows, 1, MPI_INT64_T, r, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            for (int64_t done = 0; done < rows * cols; done += DIST_PIECE) {
                int64_t m = rows * cols - done < DIST_PIECE ? rows * cols - done : DIST_PIECE;
                MPI_Recv(out_root + off + done, (int)m, MPI_FLOAT, r, 2, MPI_COMM_WORLD,
                         MPI_STATUS_IGNORE);
            }
            off += rows * cols;
        }
    } else {
        MPI_Send(&local_rows, 1, MPI_INT64_T, 0, 1, MPI_COMM_WORLD);
        for (int64_t done = 0; done < local_rows * cols; done += DIST_PIECE) {
            int64_t m = local_rows * cols - done < DIST_PIECE ? local_rows * cols - done : DIST_PIECE;
            MPI_Send(local + done, (int)m, MPI_FLOAT, 0, 2, MPI_COMM_WORLD);
        }
    }
}
