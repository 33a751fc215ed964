#include "src/simulate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "src/rng.h"
#include "src/util.h"

/* Sequence ids of the global draws: far above any cell index. */
#define SIM_GLOBAL (UINT64_C(1) << 62)
enum { SIM_GENES = 1, SIM_TYPES, SIM_BATCHES, SIM_WEIGHTS };

struct AvSim {
    AvSimParams p;
    double *type_w, *batch_w;     /* cumulative weights */
    double *type_lib, *batch_lib; /* library-size factors */
    float *q;                     /* (type, batch) profiles: n_types * n_batches * n_genes */
    double *theta;
};

void av_sim_defaults(AvSimParams *p) {
    memset(p, 0, sizeof *p);
    p->n_cells = 10000;
    p->n_genes = 2000;
    p->n_batches = 4;
    p->n_types = 10;
    p->seed = 0;
    p->libsize_sdlog = 0.45;
    p->gene_sdlog = 2.6;
    p->tail_frac = 0.03;
    p->batch_sdlog = 0.35;
    p->marker_frac = 0.03;
    p->theta_median = 0.7;
}

/* Cumulative, normalised weights w_i ~ Gamma(shape). */
static double *cum_weights(AvRngSeq *r, int n, double shape) {
    double *w = av_malloc((size_t)n * sizeof *w), sum = 0;
    for (int i = 0; i < n; i++) sum += w[i] = av_seq_gamma(r, shape);
    double acc = 0;
    for (int i = 0; i < n; i++) w[i] = (acc += w[i] / sum);
    w[n - 1] = 1.0;
    return w;
}

static int pick(const double *cum, int n, double u) {
    for (int i = 0; i < n; i++)
        if (u < cum[i]) return i;
    return n - 1;
}

void av_sim_free(AvSim *s) {
    if (!s) return;
    free(s->type_w);
    free(s->batch_w);
    free(s->type_lib);
    free(s->batch_lib);
    free(s->q);
    free(s->theta);
    free(s);
}

AvSim *av_sim_create(const AvSimParams *p, char *err) {
    if (p->n_cells < 0 || p->n_genes < 1 || p->n_genes > INT32_MAX || p->n_batches < 1 ||
        p->n_types < 1) {
        av_err(err, "simulate: need cells >= 0, genes >= 1, batches >= 1, cell types >= 1");
        return NULL;
    }
    int64_t G = p->n_genes, KB = (int64_t)p->n_types * p->n_batches;
    if (KB * G > ((int64_t)1 << 31)) {
        av_err(err, "simulate: %lld cell types x batches x genes is too many profiles",
               (long long)(KB * G));
        return NULL;
    }
    AvSim *s = av_calloc(1, sizeof *s);
    s->p = *p;
    if (s->p.median_libsize <= 0) s->p.median_libsize = 2500.0 * sqrt((double)G / 2000.0);
    AvRngSeq r;

    /* genes: baseline log share and dispersion */
    double *logp = av_malloc((size_t)G * sizeof *logp);
    s->theta = av_malloc((size_t)G * sizeof *s->theta);
    av_seq_init(&r, p->seed, AV_STREAM_SIM, SIM_GLOBAL + SIM_GENES);
    for (int64_t g = 0; g < G; g++) {
        double z = av_seq_normal(&r), e = av_seq_normal(&r), t = av_seq_uniform(&r);
        /* a log-normal body plus a tail of very highly expressed genes (ribosomal,
         * mitochondrial...): in real data the top 1% of genes hold 30-45% of the UMIs */
        double tail = t < p->tail_frac ? 1.5 + 2.0 * av_seq_uniform(&r) : 0.0;
        logp[g] = p->gene_props ? log(p->gene_props[g] > 1e-12 ? p->gene_props[g] : 1e-12)
                                : p->gene_sdlog * z + tail;
        z += tail / p->gene_sdlog;
        /* more highly expressed genes are less overdispersed, as in real data */
        double th = p->gene_theta ? p->gene_theta[g] : p->theta_median * exp(0.5 * z + 0.4 * e);
        s->theta[g] = th < 0.05 ? 0.05 : th > 1000 ? 1000 : th;
    }
    if (!p->gene_props) { /* no single gene above 3% of a cell's UMIs on average */
        double mx = -INFINITY, sum = 0;
        for (int64_t g = 0; g < G; g++) mx = logp[g] > mx ? logp[g] : mx;
        for (int64_t g = 0; g < G; g++) sum += exp(logp[g] - mx);
        for (int it = 0; it < 3; it++) {
            double cap = mx + log(0.03 * sum), s2 = 0;
            for (int64_t g = 0; g < G; g++) {
                if (logp[g] > cap) logp[g] = cap;
                s2 += exp(logp[g] - mx);
            }
            sum = s2;
        }
    }

    /* cell types: abundances, library-size factors, marker effects (log) */
    float *type_eff = av_calloc((size_t)(p->n_types * G), sizeof *type_eff);
    av_seq_init(&r, p->seed, AV_STREAM_SIM, SIM_GLOBAL + SIM_TYPES);
    s->type_lib = av_malloc((size_t)p->n_types * sizeof *s->type_lib);
    for (int k = 0; k < p->n_types; k++) {
        s->type_lib[k] = exp(0.25 * av_seq_normal(&r));
        for (int64_t g = 0; g < G; g++) {
            double u = av_seq_uniform(&r);
            double lfc = 1.0 + 2.0 * av_seq_uniform(&r);
            if (u < p->marker_frac)
                type_eff[k * G + g] = (float)(lfc * M_LN2);
            else if (u < 1.5 * p->marker_frac)
                type_eff[k * G + g] = (float)(-lfc * M_LN2);
        }
    }
    /* batches: gene effects (log-normal) and library-size shifts */
    float *batch_eff = av_malloc((size_t)(p->n_batches * G) * sizeof *batch_eff);
    av_seq_init(&r, p->seed, AV_STREAM_SIM, SIM_GLOBAL + SIM_BATCHES);
    s->batch_lib = av_malloc((size_t)p->n_batches * sizeof *s->batch_lib);
    for (int b = 0; b < p->n_batches; b++) {
        s->batch_lib[b] = p->n_batches > 1 ? exp(0.2 * av_seq_normal(&r)) : 1.0;
        for (int64_t g = 0; g < G; g++)
            batch_eff[b * G + g] =
                p->n_batches > 1 ? (float)(p->batch_sdlog * av_seq_normal(&r)) : 0.0f;
    }
    av_seq_init(&r, p->seed, AV_STREAM_SIM, SIM_GLOBAL + SIM_WEIGHTS);
    s->type_w = cum_weights(&r, p->n_types, 2.0);
    s->batch_w = cum_weights(&r, p->n_batches, 8.0);

    /* library-size factors centred (geometric mean 1), so median_libsize holds overall */
    double gm = 0;
    for (int k = 0; k < p->n_types; k++) gm += log(s->type_lib[k]) / p->n_types;
    for (int k = 0; k < p->n_types; k++) s->type_lib[k] *= exp(-gm);
    gm = 0;
    for (int b = 0; b < p->n_batches; b++) gm += log(s->batch_lib[b]) / p->n_batches;
    for (int b = 0; b < p->n_batches; b++) s->batch_lib[b] *= exp(-gm);

    /* normalised profiles of every (type, batch) */
    s->q = av_malloc((size_t)(KB * G) * sizeof *s->q);
    double *tmp = av_malloc((size_t)G * sizeof *tmp);
    for (int k = 0; k < p->n_types; k++)
        for (int b = 0; b < p->n_batches; b++) {
            double mx = -INFINITY, sum = 0;
            for (int64_t g = 0; g < G; g++) {
                tmp[g] = logp[g] + type_eff[k * G + g] + batch_eff[b * G + g];
                if (tmp[g] > mx) mx = tmp[g];
            }
            for (int64_t g = 0; g < G; g++) sum += tmp[g] = exp(tmp[g] - mx);
            float *q = s->q + ((int64_t)k * p->n_batches + b) * G;
            for (int64_t g = 0; g < G; g++) q[g] = (float)(tmp[g] / sum);
        }
    free(tmp);
    free(logp);
    free(type_eff);
    free(batch_eff);
    return s;
}

/* One NB(mu, theta) draw by inversion of its CDF from one uniform; the Gamma-Poisson
 * mixture when P(0) underflows. */
static int64_t nb_draw(AvRngSeq *r, double mu, double theta) {
    double u = av_seq_uniform(r);
    double logp0 = -theta * log1p(mu / theta);
    if (logp0 > -600) {
        double pk = exp(logp0), cdf = pk;
        if (u <= cdf) return 0;
        double ratio = mu / (theta + mu);
        int64_t k = 0;
        while (cdf < u) {
            pk *= (k + theta) / (k + 1) * ratio;
            k++;
            cdf += pk;
            if (pk < 1e-300 && k > mu) break; /* rounding left cdf just below u */
        }
        return k;
    }
    return av_seq_poisson(r, av_seq_gamma(r, theta) * mu / theta);
}

typedef struct {
    int32_t n;
    int32_t *idx;
    float *val;
} SimRow;

int av_sim_cells(const AvSim *s, int64_t lo, int64_t hi, AvCsr *out, int32_t *batch, int32_t *type,
                 char *err) {
    memset(out, 0, sizeof *out);
    if (lo < 0 || hi < lo)
        return av_err(err, "simulate: bad cell range [%lld, %lld)", (long long)lo, (long long)hi);
    const AvSimParams *p = &s->p;
    int64_t n = hi - lo, G = p->n_genes;
    SimRow *rows = av_calloc((size_t)n, sizeof *rows);
#pragma omp parallel
    {
        int32_t *idx = av_malloc((size_t)G * sizeof *idx);
        float *val = av_malloc((size_t)G * sizeof *val);
#pragma omp for schedule(dynamic, 16)
        for (int64_t i = 0; i < n; i++) {
            AvRngSeq r;
            av_seq_init(&r, p->seed, AV_STREAM_SIM, (uint64_t)(lo + i));
            int b = pick(s->batch_w, p->n_batches, av_seq_uniform(&r));
            int k = pick(s->type_w, p->n_types, av_seq_uniform(&r));
            double L = p->median_libsize * s->batch_lib[b] * s->type_lib[k] *
                       exp(p->libsize_sdlog * av_seq_normal(&r));
            const float *q = s->q + ((int64_t)k * p->n_batches + b) * G;
            int32_t m = 0;
            for (int64_t g = 0; g < G; g++) {
                int64_t c = nb_draw(&r, L * q[g], s->theta[g]);
                if (c > 0) {
                    idx[m] = (int32_t)g;
                    val[m++] = (float)c;
                }
            }
            rows[i].n = m;
            rows[i].idx = av_malloc((size_t)m * sizeof(int32_t));
            rows[i].val = av_malloc((size_t)m * sizeof(float));
            memcpy(rows[i].idx, idx, (size_t)m * sizeof(int32_t));
            memcpy(rows[i].val, val, (size_t)m * sizeof(float));
            if (batch) batch[i] = b;
            if (type) type[i] = k;
        }
        free(idx);
        free(val);
    }
    out->n_rows = n;
    out->n_cols = G;
    out->indptr = av_malloc((size_t)(n + 1) * sizeof *out->indptr);
    out->indptr[0] = 0;
    for (int64_t i = 0; i < n; i++) out->indptr[i + 1] = out->indptr[i] + rows[i].n;
    int64_t nnz = out->indptr[n];
    out->indices = av_malloc((size_t)nnz * sizeof *out->indices);
    out->data = av_malloc((size_t)nnz * sizeof *out->data);
    for (int64_t i = 0; i < n; i++) {
        memcpy(out->indices + out->indptr[i], rows[i].idx, (size_t)rows[i].n * sizeof(int32_t));
        memcpy(out->data + out->indptr[i], rows[i].val, (size_t)rows[i].n * sizeof(float));
        free(rows[i].idx);
        free(rows[i].val);
    }
    free(rows);
    return 0;
}

/* ---- calibration from real counts ---- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int av_sim_calibrate(const AvCsr *x, AvSimCalib *out, char *err) {
    memset(out, 0, sizeof *out);
    int64_t n = x->n_rows, G = x->n_cols;
    if (n < 2 || G < 1) return av_err(err, "simulate --like: need at least 2 cells and 1 gene");
    double *lib = av_calloc((size_t)n, sizeof *lib), total = 0;
    double *gsum = av_calloc((size_t)G, sizeof *gsum);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = x->indptr[i]; j < x->indptr[i + 1]; j++) {
            double v = x->data[j];
            if (!(v >= 0) || v != floor(v)) {
                free(lib);
                free(gsum);
                return av_err(err,
                              "simulate --like: value %g at cell %lld is not a whole "
                              "non-negative count",
                              v, (long long)i);
            }
            lib[i] += v;
            gsum[x->indices[j]] += v;
            total += v;
        }
    /* library sizes of non-empty cells */
    double *ll = av_malloc((size_t)n * sizeof *ll);
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if (lib[i] > 0) ll[m++] = log(lib[i]);
    if (m < 2 || total <= 0) {
        free(lib);
        free(gsum);
        free(ll);
        return av_err(err, "simulate --like: fewer than 2 cells with counts");
    }
    qsort(ll, (size_t)m, sizeof *ll, cmp_double);
    double mean = 0, var = 0;
    for (int64_t i = 0; i < m; i++) mean += ll[i];
    mean /= (double)m;
    for (int64_t i = 0; i < m; i++) var += (ll[i] - mean) * (ll[i] - mean);
    out->median_libsize = exp(m % 2 ? ll[m / 2] : 0.5 * (ll[m / 2 - 1] + ll[m / 2]));
    out->libsize_sdlog = sqrt(var / (double)(m - 1));
    free(ll);

    /* gene shares (a floor for genes never seen) and moment dispersions:
     * 1/theta = sum_c [(x - mu)^2 - mu] / sum_c mu^2 with mu = L_c p_g */
    out->n_genes = G;
    out->gene_props = av_malloc((size_t)G * sizeof *out->gene_props);
    out->gene_theta = av_malloc((size_t)G * sizeof *out->gene_theta);
    double *num = av_calloc((size_t)G, sizeof *num), lib2 = 0;
    for (int64_t g = 0; g < G; g++) {
        out->gene_props[g] = (gsum[g] > 0 ? gsum[g] : 0.1) / total;
    }
    for (int64_t i = 0; i < n; i++) lib2 += lib[i] * lib[i];
    /* sum_c (x - mu)^2 - mu = sum_c x^2 - 2 x mu + mu^2 - mu; zeros contribute mu^2 - mu */
    for (int64_t g = 0; g < G; g++) {
        double pg = out->gene_props[g];
        num[g] = pg * pg * lib2 - pg * total; /* as if every count were zero */
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = x->indptr[i]; j < x->indptr[i + 1]; j++) {
            int64_t g = x->indices[j];
            double v = x->data[j];
            num[g] += v * v - 2.0 * v * lib[i] * out->gene_props[g];
        }
    for (int64_t g = 0; g < G; g++) {
        double pg = out->gene_props[g], den = pg * pg * lib2;
        double inv = den > 0 ? num[g] / den : 0;
        double th = inv > 1e-3 ? 1.0 / inv : 1000.0;
        out->gene_theta[g] = th < 0.05 ? 0.05 : th > 1000 ? 1000 : th;
    }
    free(num);
    free(lib);
    free(gsum);
    return 0;
}

void av_sim_calib_free(AvSimCalib *c) {
    free(c->gene_props);
    free(c->gene_theta);
    memset(c, 0, sizeof *c);
}
