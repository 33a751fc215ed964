/* Differential expression maths of scvi-tools (model-spec.md section 8): Bayes factors in
 * vanilla and change mode, the estimated pseudocount, LFC summaries and highest posterior
 * density intervals, posterior-FDR calls and scvi-tools' row order. Pure functions over
 * arrays of pooled posterior draws of normalized expression; no HDF5, no MPI.
 *
 * Draw arrays are [M, G] row-major float32: row i of group 1 is paired with row i of
 * group 2 (scvi-tools' default, no permutation). */
#ifndef AV_DE_H
#define AV_DE_H
#include <stdint.h>

#define AV_DE_EPS 1e-8 /* inside the logs of the Bayes factor */
#define AV_DE_MAX_CRED 8

/* Column means of an [M, G] array (scale1 / scale2). */
void av_de_col_means(const float *s, int64_t M, int64_t G, double *mean);

/* Vanilla mode: p1 = mean_i [s1 > s2], p2 = 1 - p1, bf = log(p1 + eps) - log(p2 + eps). */
void av_de_vanilla(const float *s1, const float *s2, int64_t M, int64_t G, double *proba_m1,
                   double *proba_m2, double *bayes_factor);

/* numpy.quantile with linear interpolation of a sorted array. */
double av_de_quantile_sorted(const double *sorted, int64_t n, double q);

/* Estimated pseudocount of change mode: genes whose mean raw count in a group is below
 * threshold are "non-expressed" there; eps_A = 0.9-quantile over them of the per-gene
 * maximum of A's draws (1e-10 when there are none), same for B, and the result is
 * max(1e-10, max(eps_A, eps_B) / G) (scvi-tools divides by the number of genes). */
double av_de_pseudocount(const float *s1, int64_t M1, const float *s2, int64_t M2, int64_t G,
                         const double *raw_mean1, const double *raw_mean2, double threshold,
                         double quantile);

/* Highest posterior density interval of a sorted sample: the shortest window holding
 * floor(level * n) + 1 consecutive sorted values (arviz's rule, as scvi-tools). Returns
 * non-zero when level leaves no interval. */
int av_de_hpd_sorted(const double *sorted, int64_t n, double level, double *lo, double *hi);

/* Change mode per gene over the M pairs:
 *   lfc = log2(s1 + pc) - log2(s2 + pc); up = mean[lfc >= delta], down = mean[lfc < -delta];
 *   proba_de = max(up, down) (test_mode three) or up + down (two);
 *   bayes_factor = log(proba_de + eps) - log(1 - proba_de + eps);
 * and the summaries of log2(s1 + pc*1e-3) - log2(s2 + pc*1e-3): mean, median (numpy's),
 * population std, min, max and the HPD interval at each of n_cred levels (ci_lo/ci_hi
 * are [n_cred, G]; may be NULL when n_cred is 0). */
typedef struct {
    double *proba_de, *proba_not_de, *bayes_factor;
    double *lfc_mean, *lfc_median, *lfc_std, *lfc_min, *lfc_max;
    double *ci_lo, *ci_hi;
} AvDeChange;

void av_de_change(const float *s1, const float *s2, int64_t M, int64_t G, double pseudocount,
                  double delta, int test_mode_two, int n_cred, const double *cred_levels,
                  AvDeChange *out);

/* Order of rows by key descending; ties keep their original order (stable). NaN last. */
void av_de_order_desc(const double *key, int64_t n, int64_t *order);

/* Posterior expected FDR calls: with proba sorted descending (stable), the top-k FDR is
 * mean_{i<=k}(1 - proba_i); d = number of k with FDR <= target; the first d genes in that
 * order are flagged. flags[g] refers to the original gene order. */
void av_de_fdr_flags(const double *proba_de, int64_t n, double target, uint8_t *flags);

/* Python's repr of a float64 (shortest round-trip digits, "1e-05", "100.0", "inf",
 * "nan"), which pandas' to_csv writes. buf must hold 32 bytes. */
void av_de_format_double(double x, char *buf);

#endif
