/* A realistic synthetic single-cell count matrix (the generator behind `atlasvi simulate`).
 *
 * Model: gene g has a log-normal baseline share p_g (heavy-tailed, as in real data);
 * each cell type up- and down-regulates its own marker genes (log2 fold changes 1..3);
 * each batch multiplies every gene by a log-normal factor (sd batch_sdlog) and shifts
 * library sizes; cell c of type k in batch b has a log-normal library size L_c and counts
 *     x_cg ~ NB(mean mu_cg = L_c q_kbg, inverse dispersion theta_g)
 *          = Poisson(Gamma(theta_g, rate theta_g / mu_cg)),
 * where q_kb is the normalised profile of (k, b). The NB is drawn by inverting its CDF
 * from one uniform (exactly the Gamma-Poisson law, and O(genes + counts) per cell).
 *
 * Every cell draws from its own counter-based sequence (seed, AV_STREAM_SIM, cell index),
 * so the matrix does not depend on how the cells are chunked or threaded.
 * No HDF5 here: `atlasvi simulate` streams the chunks through io/output.h. */
#ifndef AV_SIMULATE_H
#define AV_SIMULATE_H
#include <stdint.h>

#include "src/data.h"

typedef struct {
    int64_t n_cells, n_genes;
    int n_batches, n_types;
    uint64_t seed;
    double median_libsize; /* median UMIs per cell; 0: 2500 * sqrt(n_genes / 2000) */
    double libsize_sdlog;  /* sd of log library size within a batch and type */
    double gene_sdlog;     /* sd of log baseline expression across genes */
    double tail_frac;      /* share of genes in the highly expressed tail */
    double batch_sdlog;    /* sd of the per-batch log gene effects */
    double marker_frac;    /* share of genes up-regulated in each type (as many / 2 down) */
    double theta_median;   /* median NB inverse dispersion */
    /* Calibration from a real matrix (both NULL: synthetic): n_genes entries each. */
    const double *gene_props; /* relative mean expression (normalised inside) */
    const double *gene_theta; /* per-gene inverse dispersion */
} AvSimParams;

void av_sim_defaults(AvSimParams *p);

typedef struct AvSim AvSim;

/* Draws the global parameters (gene means, markers, batch effects). */
AvSim *av_sim_create(const AvSimParams *p, char *err);
void av_sim_free(AvSim *s);

/* Cells [lo, hi) as CSR (indptr from 0, sorted indices, whole-number float counts) with
 * their batch and cell-type codes (arrays of hi - lo, may be NULL). Threads with OpenMP. */
int av_sim_cells(const AvSim *s, int64_t lo, int64_t hi, AvCsr *out, int32_t *batch, int32_t *type,
                 char *err);

/* Calibration of AvSimParams from real counts (a sample of cells x genes): gene shares,
 * the median and log-sd of library sizes, and per-gene method-of-moments dispersions. */
typedef struct {
    int64_t n_genes;
    double *gene_props, *gene_theta; /* malloc'ed, n_genes each */
    double median_libsize, libsize_sdlog;
} AvSimCalib;

int av_sim_calibrate(const AvCsr *counts, AvSimCalib *out, char *err);
void av_sim_calib_free(AvSimCalib *c);

#endif
