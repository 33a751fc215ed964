#include "dist/dist.h"

#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/util.h"

/* Before dist_init (or without it) everything behaves as one rank and no MPI call is made.
 * After dist_init all traffic goes over a private duplicate of MPI_COMM_WORLD, so our tags
 * and collectives can never match messages of another library in the same process. */
static int g_rank = 0, g_size = 1, g_owns_mpi = 0;
static MPI_Comm g_comm = MPI_COMM_NULL;

/* MPI counts are int: large buffers go in pieces of at most DIST_PIECE elements. A test
 * build shrinks it (-DDIST_PIECE=7) to exercise the piecewise loops on small buffers. */
#ifndef DIST_PIECE
#define DIST_PIECE ((int64_t)1 << 30)
#endif
_Static_assert(DIST_PIECE > 0 && DIST_PIECE <= INT_MAX, "DIST_PIECE must fit an MPI count");

static int64_t piece(int64_t left) {
    return left < DIST_PIECE ? left : (int64_t)DIST_PIECE;
}

static int mpi_live(void) {
    int inited = 0, fin = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&fin);
    return inited && !fin;
}

int dist_init(int *argc, char ***argv) {
    if (g_comm != MPI_COMM_NULL) return 0;
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        int provided = 0;
        /* OpenMP threads compute; only the main thread calls MPI. */
        MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        g_owns_mpi = 1;
    }
    /* Errors are fatal on our communicator (the default, made explicit): a failing MPI
     * call aborts the whole job instead of leaving the other ranks waiting. */
    MPI_Comm_dup(MPI_COMM_WORLD, &g_comm);
    MPI_Comm_set_errhandler(g_comm, MPI_ERRORS_ARE_FATAL);
    MPI_Comm_rank(g_comm, &g_rank);
    MPI_Comm_size(g_comm, &g_size);
    return 0;
}

void dist_finalize(void) {
    if (!mpi_live()) return;
    if (g_comm != MPI_COMM_NULL) MPI_Comm_free(&g_comm);
    g_comm = MPI_COMM_NULL;
    if (g_owns_mpi) MPI_Finalize();
    g_rank = 0;
    g_size = 1;
}

int dist_rank(void) {
    return g_rank;
}
int dist_size(void) {
    return g_size;
}
void dist_barrier(void) {
    if (g_size > 1) MPI_Barrier(g_comm);
}

static void allreduce(void *buf, int64_t n, MPI_Datatype t, size_t elem, MPI_Op op) {
    if (g_size == 1 || n <= 0) return;
    char *p = buf;
    for (int64_t off = 0; off < n; off += DIST_PIECE)
        MPI_Allreduce(MPI_IN_PLACE, p + (size_t)off * elem, (int)piece(n - off), t, op, g_comm);
}

void dist_allreduce_f32(float *buf, int64_t n) {
    allreduce(buf, n, MPI_FLOAT, sizeof *buf, MPI_SUM);
}
void dist_allreduce_f64(double *buf, int64_t n) {
    allreduce(buf, n, MPI_DOUBLE, sizeof *buf, MPI_SUM);
}
void dist_allreduce_i64(int64_t *buf, int64_t n) {
    allreduce(buf, n, MPI_INT64_T, sizeof *buf, MPI_SUM);
}
void dist_allreduce_min_i64(int64_t *buf, int64_t n) {
    allreduce(buf, n, MPI_INT64_T, sizeof *buf, MPI_MIN);
}
void dist_allreduce_max_i64(int64_t *buf, int64_t n) {
    allreduce(buf, n, MPI_INT64_T, sizeof *buf, MPI_MAX);
}
void dist_allreduce_max_f64(double *buf, int64_t n) {
    allreduce(buf, n, MPI_DOUBLE, sizeof *buf, MPI_MAX);
}

void dist_allgather_i64(int64_t value, int64_t *out) {
    if (g_size == 1) {
        out[0] = value;
        return;
    }
    MPI_Allgather(&value, 1, MPI_INT64_T, out, 1, MPI_INT64_T, g_comm);
}

int64_t dist_exscan_i64(int64_t value) {
    if (g_size == 1) return 0;
    int64_t before = 0;
    MPI_Exscan(&value, &before, 1, MPI_INT64_T, MPI_SUM, g_comm);
    return g_rank == 0 ? 0 : before; /* MPI leaves rank 0's result undefined */
}

void dist_bcast(void *buf, int64_t bytes, int root) {
    if (g_size == 1 || bytes <= 0) return;
    char *p = buf;
    for (int64_t off = 0; off < bytes; off += DIST_PIECE)
        MPI_Bcast(p + off, (int)piece(bytes - off), MPI_BYTE, root, g_comm);
}

void dist_bcast_strings(char ***items, int64_t *n, int root) {
    if (g_size == 1) return;
    dist_bcast(n, sizeof *n, root);
    /* One buffer of NUL-terminated strings; a NULL entry on root travels as "". */
    int64_t bytes = 0;
    if (g_rank == root)
        for (int64_t i = 0; i < *n; i++)
            bytes += (int64_t)((*items)[i] ? strlen((*items)[i]) : 0) + 1;
    dist_bcast(&bytes, sizeof bytes, root);
    if (g_rank == root) {
        char *buf = av_malloc((size_t)bytes), *p = buf;
        for (int64_t i = 0; i < *n; i++) {
            const char *s = (*items)[i] ? (*items)[i] : "";
            size_t l = strlen(s) + 1;
            memcpy(p, s, l);
            p += l;
        }
        dist_bcast(buf, bytes, root);
        free(buf);
        return;
    }
    char *buf = av_malloc((size_t)bytes);
    dist_bcast(buf, bytes, root);
    *items = av_malloc(sizeof(char *) * (size_t)(*n > 0 ? *n : 1));
    const char *p = buf;
    for (int64_t i = 0; i < *n; i++) {
        size_t l = strlen(p) + 1;
        (*items)[i] = av_malloc(l);
        memcpy((*items)[i], p, l);
        p += l;
    }
    free(buf);
}

int dist_any_failed(int failed, const char *msg) {
    int mine = failed ? g_rank : INT_MAX, lowest = mine;
    if (g_size > 1) MPI_Allreduce(&mine, &lowest, 1, MPI_INT, MPI_MIN, g_comm);
    if (lowest == INT_MAX) return 0;
    if (lowest == g_rank) {
        fprintf(stderr, "atlasvi: error: %s\n", msg && *msg ? msg : "failed");
        fflush(stderr);
    }
    return 1;
}

void dist_abort(const char *msg) {
    if (g_size > 1)
        fprintf(stderr, "atlasvi: error: %s (rank %d of %d; aborting all ranks)\n",
                msg && *msg ? msg : "fatal error", g_rank, g_size);
    else
        fprintf(stderr, "atlasvi: error: %s\n", msg && *msg ? msg : "fatal error");
    fflush(stderr);
    if (mpi_live()) MPI_Abort(g_comm != MPI_COMM_NULL ? g_comm : MPI_COMM_WORLD, 1);
    exit(1);
}

void dist_gather_rows_f32(const float *local, int64_t local_rows, int64_t cols, float *out_root) {
    if (local_rows < 0 || cols < 0) dist_abort("dist_gather_rows_f32: negative rows or cols");
    int64_t mine = local_rows * cols;
    if (g_size == 1) {
        if (mine > 0 && out_root != local) memcpy(out_root, local, sizeof(float) * (size_t)mine);
        return;
    }
    /* Point-to-point in rank order keeps counts in int64 (no 2^31 limit on the total);
     * ranks with zero rows send only their count. */
    if (g_rank == 0) {
        if (mine > 0 && out_root != local) memcpy(out_root, local, sizeof(float) * (size_t)mine);
        int64_t off = mine;
        for (int r = 1; r < g_size; r++) {
            int64_t rows = 0;
            MPI_Recv(&rows, 1, MPI_INT64_T, r, 1, g_comm, MPI_STATUS_IGNORE);
            int64_t total = rows * cols;
            for (int64_t done = 0; done < total; done += DIST_PIECE)
                MPI_Recv(out_root + off + done, (int)piece(total - done), MPI_FLOAT, r, 2, g_comm,
                         MPI_STATUS_IGNORE);
            off += total;
        }
    } else {
        MPI_Send(&local_rows, 1, MPI_INT64_T, 0, 1, g_comm);
        for (int64_t done = 0; done < mine; done += DIST_PIECE)
            MPI_Send(local + done, (int)piece(mine - done), MPI_FLOAT, 0, 2, g_comm);
    }
}
