/* Dense linear algebra over all ranks with ScaLAPACK (BLACS on MPI_COMM_WORLD). */
#ifndef AV_DIST_SCALAPACK_H
#define AV_DIST_SCALAPACK_H
#include <stdint.h>

/* Collective, after dist_init. Eigen-decomposition of the symmetric n x n matrix A, held
 * in full and identical on every rank (its layout does not matter: it is symmetric), by
 * pdsyevd (divide and conquer) over a pr x pc grid of all ranks, A distributed in 2-D
 * block-cyclic blocks (each rank copies its own blocks, no traffic). On return, on every
 * rank: w holds the n eigenvalues in ascending order and Z (n x n, column-major: column j
 * is the unit eigenvector of w[j]) the eigenvectors. Every rank returns the same status;
 * on failure err holds one line on every rank. */
int dist_symmetric_eigen(const double *A, int64_t n, double *w, double *Z, char *err);

/* The process grid used for p ranks: pr x pc with pr <= pc, pr the largest divisor of p
 * not above sqrt(p). */
void dist_grid_shape(int p, int *pr, int *pc);

#endif
