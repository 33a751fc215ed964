/* ScaLAPACK's symmetric eigensolver behind dist/scalapack.h. Debian's
 * libscalapack-openmpi ships no C header: the prototypes are declared here. */
#include "dist/scalapack.h"

#include <math.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "src/util.h"

extern int Csys2blacs_handle(MPI_Comm comm);
extern void Cblacs_gridinit(int *ctxt, const char *order, int nprow, int npcol);
extern void Cblacs_gridinfo(int ctxt, int *nprow, int *npcol, int *myrow, int *mycol);
extern void Cblacs_gridexit(int ctxt);
extern void Cfree_blacs_system_handle(int handle);
extern int numroc_(const int *n, const int *nb, const int *iproc, const int *isrcproc,
                   const int *nprocs);
extern void descinit_(int *desc, const int *m, const int *n, const int *mb, const int *nb,
                      const int *irsrc, const int *icsrc, const int *ictxt, const int *lld,
                      int *info);
extern void pdsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *ia,
                     const int *ja, const int *desca, double *w, double *z, const int *iz,
                     const int *jz, const int *descz, double *work, const int *lwork, int *iwork,
                     const int *liwork, int *info);

void dist_grid_shape(int p, int *pr, int *pc) {
    int r = (int)floor(sqrt((double)p));
    while (r > 1 && p % r) r--;
    *pr = r < 1 ? 1 : r;
    *pc = p / *pr;
}

/* global index of local index l in a block-cyclic dimension */
static int64_t global_index(int l, int nb, int me, int np) {
    return ((int64_t)(l / nb) * np + me) * nb + l % nb;
}

int dist_symmetric_eigen(const double *A, int64_t n64, double *w, double *Z, char *err) {
    int inited = 0, fin = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&fin);
    if (!inited || fin)
        return av_err(err, "dist_symmetric_eigen needs MPI (call dist_init first)") ? -1 : -1;
    if (n64 < 1 || n64 > 46340) /* n*n local sizes must stay within int */
        return av_err(err, "symmetric eigenproblem of order %lld is out of range (1..46340)",
                      (long long)n64)
                   ? -1
                   : -1;
    int n = (int)n64, P = dist_size(), pr, pc;
    dist_grid_shape(P, &pr, &pc);
    /* blocks of 32 (at least one block per grid row/column where n allows) */
    int nb = 32;
    int span = pr > pc ? pr : pc;
    if (n < nb * span) nb = (n + span - 1) / span;
    if (nb < 1) nb = 1;
    int handle = Csys2blacs_handle(MPI_COMM_WORLD);
    int ctxt = handle;
    Cblacs_gridinit(&ctxt, "Row", pr, pc);
    int npr, npc, myr, myc;
    Cblacs_gridinfo(ctxt, &npr, &npc, &myr, &myc);
    int zero = 0, one = 1, info = 0;
    int mloc = numroc_(&n, &nb, &myr, &zero, &pr);
    int nloc = numroc_(&n, &nb, &myc, &zero, &pc);
    int lld = mloc > 1 ? mloc : 1;
    int desca[9], descz[9];
    descinit_(desca, &n, &n, &nb, &nb, &zero, &zero, &ctxt, &lld, &info);
    if (!info) descinit_(descz, &n, &n, &nb, &nb, &zero, &zero, &ctxt, &lld, &info);
    double *a = av_malloc(sizeof(double) * ((size_t)lld * (size_t)nloc + 1));
    double *z = av_malloc(sizeof(double) * ((size_t)lld * (size_t)nloc + 1));
    for (int j = 0; j < nloc; j++) {
        int64_t gj = global_index(j, nb, myc, pc);
        for (int i = 0; i < mloc; i++)
            a[(size_t)j * lld + i] = A[global_index(i, nb, myr, pr) * n64 + gj];
    }
    double wq = 0;
    int iwq = 0, lwork = -1, liwork = -1;
    if (!info)
        pdsyevd_("V", "U", &n, a, &one, &one, desca, w, z, &one, &one, descz, &wq, &lwork, &iwq,
                 &liwork, &info);
    int rc = 0;
    if (info) {
        rc = av_err(err, "ScaLAPACK pdsyevd set-up failed (info %d)", info);
    } else {
        /* some versions under-estimate the workspace: give it a margin */
        lwork = (int)(wq * 1.25) + 1024;
        liwork = iwq + 64;
        double *work = av_malloc(sizeof(double) * (size_t)lwork);
        int *iwork = av_malloc(sizeof(int) * (size_t)liwork);
        pdsyevd_("V", "U", &n, a, &one, &one, desca, w, z, &one, &one, descz, work, &lwork, iwork,
                 &liwork, &info);
        free(work);
        free(iwork);
        if (info)
            rc = av_err(err, "ScaLAPACK pdsyevd failed (info %d%s)", info,
                        info > 0 ? ": eigenvalues did not converge" : ": bad argument");
    }
    if (dist_any_failed(rc, err)) rc = -1;
    if (!rc) {
        /* every rank adds its blocks of Z into a zeroed copy, then one sum over ranks */
        memset(Z, 0, sizeof(double) * (size_t)n64 * (size_t)n64);
        for (int j = 0; j < nloc; j++) {
            int64_t gj = global_index(j, nb, myc, pc);
            for (int i = 0; i < mloc; i++)
                Z[gj * n64 + global_index(i, nb, myr, pr)] = z[(size_t)j * lld + i];
        }
        dist_allreduce_f64(Z, n64 * n64);
        /* eigenvalues are on every rank already; make them bit-identical anyway */
        dist_bcast(w, (int64_t)sizeof(double) * n64, 0);
    }
    free(a);
    free(z);
    Cblacs_gridexit(ctxt);
    Cfree_blacs_system_handle(handle);
    return rc ? -1 : 0;
}
