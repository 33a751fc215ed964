/* Highly variable genes, scanpy's highly_variable_genes(flavor="seurat_v3"), as maths on
 * sufficient statistics so that ranks can compute them on their cells and sum them:
 *
 *   pass 1: per batch, per gene sum and sum of squares of the counts, and the cell count
 *   fit:    per batch, loess of log10 variance on log10 mean (skmisc's loess, span 0.3,
 *           degree 2, interpolated surface), regularised std and clip value per gene
 *   pass 2: per batch, per gene sum and sum of squares of min(count, clip)
 *   finish: normalised variance per batch, ranks, median rank over batches, number of
 *           batches where a gene is in the top n, mean normalised variance, selection.
 *
 * No MPI or HDF5 here. */
#ifndef AV_HVG_H
#define AV_HVG_H
#include <stdint.h>

#include "src/data.h"

/* Local regression of y on x as netlib's dloess (used by skmisc.loess, scanpy's loess)
 * does with its defaults for one predictor: tricube weights over the nearest
 * floor(n*span + 1e-5) points, local polynomial of the given degree (1 or 2) computed
 * at the vertices of a k-d tree (cells of at most floor(n*span*0.2) points) and
 * interpolated between vertices by cubic Hermite polynomials (surface="interpolate").
 * fitted[i] is the fit at x[i]. Returns non-zero with a message when the span is too
 * small for the number of points or a neighbourhood has zero width. */
int av_loess_1d(const double *x, const double *y, int64_t n, double span, int degree,
                double *fitted, char *err);

/* Layout of the pass-1 statistics: for each batch b, stats[b * (2G + 1) + ...] holds the
 * G sums, then the G sums of squares, then the number of cells. */
int64_t av_hvg_stats_len(int64_t n_vars, int n_batch);
/* Adds the pass-1 statistics of the rows of x; batch[i * stride] is the batch of row i
 * (NULL: every cell in batch 0). stats must be zeroed by the caller. */
void av_hvg_pass1(const AvCsr *x, const int32_t *batch, int64_t stride, int n_batch, double *stats);

/* From summed pass-1 statistics: for every batch with cells, the loess fit and
 *   reg_std[b*G + j] = sqrt(10^fit)  (1 for genes with zero variance in the batch)
 *   clip[b*G + j]    = reg_std * sqrt(n_b) + mean_b
 * Batches without cells get reg_std 1 and clip 0. Fails when a batch with cells has
 * fewer than 2 of them or the loess fails. */
int av_hvg_fit(const double *stats, int64_t n_vars, int n_batch, double span, double *reg_std,
               double *clip, char *err);

/* Adds the pass-2 statistics of the rows of x: clipped[b * 2G + j] the sum and
 * clipped[b * 2G + G + j] the sum of squares of min(x, clip[b*G + j]). Zeroed by caller. */
void av_hvg_pass2(const AvCsr *x, const int32_t *batch, int64_t stride, int n_batch,
                  const double *clip, double *clipped);

typedef struct {
    double *means, *variances; /* over all cells (variance with ddof 1) */
    double *variances_norm;    /* mean over batches with cells */
    double *rank;              /* median rank of the batches where the gene is in the
                                * top n_top (0 = most variable); NaN when in none */
    int64_t *nbatches;         /* number of batches where the gene is in the top n_top */
    uint8_t *highly_variable;  /* the n_top genes by (rank, -nbatches, gene order) */
    int n_batches_used;        /* batches with cells */
} AvHvgResult;

/* Allocates and fills r (free with av_hvg_result_free). */
void av_hvg_finish(const double *stats, const double *clipped, const double *reg_std,
                   int64_t n_vars, int n_batch, int64_t n_top, AvHvgResult *r);
void av_hvg_result_free(AvHvgResult *r);

/* ---- The command's glue, in src/app_hvg.c (av_app: ranks and files) ---------------- */

typedef struct {
    const char *layer;     /* NULL: X */
    const char *batch_key; /* NULL: one batch */
    int64_t n_top;
    double span;
} AvHvgOptions;

/* Collective. Registers input, reads this rank's cells, pass 1 with one reduction, the
 * fit on rank 0 (broadcast), pass 2 with one reduction; r is filled on every rank, and
 * the gene names (*n_vars of them, to free with av_free_strings) when var_names is not
 * NULL. Every rank returns the same status. */
int av_hvg_compute(const char *input, const AvHvgOptions *o, AvHvgResult *r, int64_t *n_vars,
                   char ***var_names, char *err);

/* Collective; rank 0 writes, atomically. output (may be NULL): a new .h5ad with obs and
 * var of input, the rest of an .h5ad input (X, layers, obsm, ...) copied, and var columns
 * highly_variable, highly_variable_rank, means, variances, variances_norm (and
 * highly_variable_nbatches when with_nbatches). subset (may be NULL): a new .h5ad whose X holds
 * only the highly variable genes of the registered matrix (streamed in row chunks), with obs of
 * input and those var columns for the kept genes. */
int av_hvg_write(const char *input, const char *layer, const char *output, const char *subset,
                 const AvHvgResult *r, int64_t n_vars, int with_nbatches, char *err);

#endif
