/* PCA of log-normalized counts as scanpy's default pipeline does it
 * (normalize_total(target_sum=1e4), log1p, pca without scaling: centred, no zero-centring
 * skipped), on a distributed covariance: every rank adds X^T X and the column sums of
 * its cells, the sums are reduced, the eigenvectors of the gene x gene covariance are the
 * loadings, and every rank projects its own cells. Maths only: no MPI or HDF5. */
#ifndef AV_PCA_H
#define AV_PCA_H
#include <stdint.h>

#include "src/data.h"

/* x[i, :] <- log1p(x[i, :] / sum(x[i, :]) * target) in place (rows summing to zero stay
 * zero), in double then rounded to float32. */
void av_log_normalize(AvCsr *x, double target);

/* sel[j] = position of gene j among the m genes used, or -1 (sel NULL: all genes, m =
 * n_cols). Adds the upper triangle of X_sel^T X_sel to gram (m x m, row-major) and the
 * column sums to colsum, in double (dense row blocks through BLAS dsyrk). */
void av_pca_accumulate(const AvCsr *x, const int32_t *sel, int64_t m, double *gram, double *colsum);

/* Turns the summed upper-triangle Gram matrix of n cells into the full covariance
 * (X - mean)^T (X - mean) / (n - 1); mean (m) receives the column means. */
void av_pca_covariance(double *gram, const double *colsum, int64_t m, int64_t n, double *mean);

/* From eigenpairs in ascending order (w, Z column-major m x m) the k leading components:
 * loadings (m x k, row-major: gene-major as varm/PCs) with the sign that makes the entry of
 * largest magnitude in each component positive, and their variances (eigenvalues). */
void av_pca_components(const double *w, const double *Z, int64_t m, int k, double *loadings,
                       double *variance);

/* Scores of the rows of x: (x_sel - mean) . loadings into out (rows x k, float32). */
void av_pca_project(const AvCsr *x, const int32_t *sel, int64_t m, const double *mean,
                    const double *loadings, int k, float *out);

/* ---- The command's glue, in src/app_pca.c (av_app: ranks, files, ScaLAPACK) -------- */

typedef struct {
    const char *layer;    /* NULL: X */
    int n_comps;          /* 50 */
    const char *hvg_from; /* NULL: every gene; else a file whose var/highly_variable picks
                           * the genes (same var names as the input) */
    const char *mask_key; /* that column's name; NULL: "highly_variable" */
    double target_sum;    /* 1e4 */
} AvPcaOptions;

typedef struct {
    int64_t n_obs, n_vars, n_used; /* genes used: n_used of n_vars */
    int k;                         /* components computed (n_comps, at most n_used, n_obs - 1) */
    float *scores;                 /* rank 0: n_obs x k in file order; NULL elsewhere */
    double *loadings;              /* every rank: n_vars x k (zero rows for unused genes) */
    double *variance;              /* every rank: k eigenvalues, descending */
    double *variance_ratio;        /* every rank: k, variance / total variance */
} AvPcaResult;

/* Collective. Reads this rank's cells (av_setup_load), normalizes, one reduction of the
 * Gram matrix and column sums, the eigensolver over all ranks, projection, gather of the
 * scores to rank 0. Every rank returns the same status. */
int av_pca_compute(const char *input, const AvPcaOptions *o, AvPcaResult *r, char *err);
void av_pca_result_free(AvPcaResult *r);

#endif
