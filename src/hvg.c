/* seurat_v3 highly variable genes on sufficient statistics, and a one-predictor loess
 * that follows netlib's dloess (skmisc.loess) step by step: the k-d tree of ehg126/
 * ehg124, the vertex fits of ehg127 and the Hermite interpolation of ehg128. */
#include "src/hvg.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "src/util.h"

/* ---- loess ---------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One-sided Jacobi SVD of the k x k matrix a (column-major, k <= 3): on return the
 * columns of a are U * sigma and v holds V. */
static void jacobi_svd(double *a, double *v, int k) {
    for (int i = 0; i < k * k; i++) v[i] = 0;
    for (int i = 0; i < k; i++) v[i * k + i] = 1;
    for (int sweep = 0; sweep < 60; sweep++) {
        int rotated = 0;
        for (int i = 0; i < k - 1; i++)
            for (int j = i + 1; j < k; j++) {
                double al = 0, be = 0, ga = 0;
                for (int r = 0; r < k; r++) {
                    al += a[i * k + r] * a[i * k + r];
                    be += a[j * k + r] * a[j * k + r];
                    ga += a[i * k + r] * a[j * k + r];
                }
                if (ga == 0 || fabs(ga) <= DBL_EPSILON * sqrt(al * be)) continue;
                rotated = 1;
                double zeta = (be - al) / (2 * ga);
                double t = (zeta >= 0 ? 1.0 : -1.0) / (fabs(zeta) + sqrt(1 + zeta * zeta));
                double c = 1 / sqrt(1 + t * t), s = c * t;
                for (int r = 0; r < k; r++) {
                    double ai = a[i * k + r], aj = a[j * k + r];
                    a[i * k + r] = c * ai - s * aj;
                    a[j * k + r] = s * ai + c * aj;
                    double vi = v[i * k + r], vj = v[j * k + r];
                    v[i * k + r] = c * vi - s * vj;
                    v[j * k + r] = s * vi + c * vj;
                }
            }
        if (!rotated) break;
    }
}

/* Local fit at q (ehg127): value s[0] and slope s[1]. xs sorted ascending, ys with it. */
static int vertex_fit(const double *xs, const double *ys, int64_t n, int64_t nf, double span, int k,
                      double q, double *dist, double *b, double *s, char *err) {
    for (int64_t i = 0; i < n; i++) dist[i] = (xs[i] - q) * (xs[i] - q);
    /* the nf-th smallest squared distance: the nearest nf points form a window of the
     * sorted x; slide it from the left */
    int64_t lo = 0;
    while (lo + nf < n && (q - xs[lo]) > (xs[lo + nf] - q)) lo++;
    /* dist of the window's farthest point is the nf-th smallest */
    double far = dist[lo] > dist[lo + nf - 1] ? dist[lo] : dist[lo + nf - 1];
    double rho = far * (span > 1 ? span : 1.0);
    if (!(rho > 0))
        return av_err(err,
                      "loess: the neighbourhood of %g has zero width (span too small "
                      "for tied values)",
                      q);
    /* design rows of the points with dist < rho, scaled by sqrt(tricube weight) */
    int64_t m = 0;
    double colnorm[3] = {0, 0, 0};
    double *eta = b + 3 * nf;
    for (int64_t i = lo; i < lo + nf; i++) {
        double w = sqrt(dist[i] / rho);
        double t = 1 - w * w * w;
        w = dist[i] < rho ? sqrt(t * t * t) : 0.0;
        double dx = xs[i] - q;
        b[0 * nf + m] = w;
        if (k > 1) b[1 * nf + m] = w * dx;
        if (k > 2) b[2 * nf + m] = w * dx * dx;
        eta[m] = w * ys[i];
        m++;
    }
    for (int j = 0; j < k; j++) {
        double sc = 0;
        for (int64_t i = 0; i < m; i++) sc += b[j * nf + i] * b[j * nf + i];
        sc = sqrt(sc);
        if (sc > 0)
            for (int64_t i = 0; i < m; i++) b[j * nf + i] /= sc;
        colnorm[j] = sc > 0 ? sc : 1;
    }
    /* Householder QR of the m x k design, applied to eta */
    for (int j = 0; j < k; j++) {
        double *c = b + j * nf, nrm = 0;
        for (int64_t i = j; i < m; i++) nrm += c[i] * c[i];
        nrm = sqrt(nrm);
        if (nrm == 0) continue;
        if (c[j] > 0) nrm = -nrm;
        /* v = c[j..] - nrm e_j, H = I - 2 v v^T / v^T v */
        double v0 = c[j] - nrm;
        double vtv = v0 * v0;
        for (int64_t i = j + 1; i < m; i++) vtv += c[i] * c[i];
        c[j] = v0;
        for (int jj = j + 1; jj <= k; jj++) {
            double *d = jj < k ? b + jj * nf : eta, dot = 0;
            for (int64_t i = j; i < m; i++) dot += c[i] * d[i];
            double f = 2 * dot / vtv;
            for (int64_t i = j; i < m; i++) d[i] -= f * c[i];
        }
        c[j] = nrm;
        for (int64_t i = j + 1; i < m; i++) c[i] = 0;
    }
    /* pseudo-inverse of R through its SVD, as ehg127 does */
    double r[9] = {0}, v[9], sig[3], gam[3];
    for (int j = 0; j < k; j++)
        for (int i = 0; i <= j && i < m; i++) r[j * k + i] = b[j * nf + i];
    jacobi_svd(r, v, k);
    double smax = 0;
    for (int j = 0; j < k; j++) {
        double t = 0;
        for (int i = 0; i < k; i++) t += r[j * k + i] * r[j * k + i];
        sig[j] = sqrt(t);
        if (sig[j] > smax) smax = sig[j];
    }
    double tol = smax * 100 * DBL_EPSILON;
    for (int j = 0; j < k; j++) {
        double t = 0;
        if (sig[j] > tol) {
            for (int i = 0; i < k && i < m; i++) t += r[j * k + i] / sig[j] * eta[i];
            t /= sig[j];
        }
        gam[j] = t;
    }
    for (int i = 0; i < 2; i++) {
        double t = 0;
        if (i < k)
            for (int j = 0; j < k; j++) t += v[j * k + i] * gam[j];
        s[i] = i < k ? t / colnorm[i] : 0;
    }
    return 0;
}

typedef struct {
    int64_t l, u;   /* points [l, u] (1-based, in sorted order) */
    int64_t v0, v1; /* lower and upper vertex */
    int split;      /* 0: leaf */
    double xi;
    int64_t lo, hi; /* children */
} Cell;

int av_loess_1d(const double *x, const double *y, int64_t n, double span, int degree,
                double *fitted, char *err) {
    if (n < 1) return av_err(err, "loess: no points");
    if (!(span > 0)) return av_err(err, "loess: span must be positive");
    int64_t nf = (int64_t)floor((double)n * span + 1e-5);
    if (nf > n) nf = n;
    int k = degree == 2 ? 3 : degree == 1 ? 2 : 1;
    if (nf <= 0 || k > nf - 1)
        return av_err(err,
                      "loess: span %g is too small for %lld points (a local fit needs more "
                      "than %d neighbours)",
                      span, (long long)n, k);
    int64_t fc = (int64_t)floor((double)n * (span * 0.2));
    /* sort (x, y) by x; ties keep any order: only the values matter below */
    double *pairs = av_malloc(sizeof(double) * 2 * (size_t)n);
    for (int64_t i = 0; i < n; i++) pairs[2 * i] = x[i], pairs[2 * i + 1] = y[i];
    qsort(pairs, (size_t)n, 2 * sizeof(double), cmp_double);
    double *xs = av_malloc(sizeof(double) * (size_t)(n + 1));
    double *ys = av_malloc(sizeof(double) * (size_t)(n + 1));
    xs[0] = ys[0] = 0; /* 1-based below */
    for (int64_t i = 0; i < n; i++) xs[i + 1] = pairs[2 * i], ys[i + 1] = pairs[2 * i + 1];
    free(pairs);
    /* ehg126: bounding box expanded by 0.5% */
    double alpha = xs[1], beta = xs[n];
    double mu = 0.005 * fmax(beta - alpha, 1e-10 * fmax(fabs(alpha), fabs(beta)) + 1e-30);
    int64_t nvmax = n > 200 ? n : 200, ncmax = nvmax;
    double *vert = av_malloc(sizeof(double) * (size_t)nvmax);
    Cell *cell = av_calloc((size_t)ncmax, sizeof *cell);
    vert[0] = alpha - mu;
    vert[1] = beta + mu;
    int64_t nv = 2, nc = 1;
    cell[0] = (Cell){1, n, 0, 1, 0, 0, 0, 0};
    /* ehg124: split at the median, ties go to the upper cell */
    for (int64_t p = 0; p < nc; p++) {
        Cell *c = &cell[p];
        int64_t l = c->l, u = c->u;
        double diam = vert[c->v1] - vert[c->v0];
        int leaf = (u - l + 1 <= fc) || diam <= 0;
        if (!leaf) leaf = ncmax < nc + 2 || (double)nvmax < (double)nv + 1.0;
        int64_t m = 0;
        if (!leaf) {
            m = (l + u) / 2;
            int64_t off = 0;
            for (;;) {
                if (m + off >= u || m + off < l) break;
                if (xs[m + off] == xs[m + off + 1]) {
                    off = -off;
                    if (off >= 0) off++;
                } else {
                    m += off;
                    break;
                }
            }
            leaf = vert[c->v0] == xs[m] || vert[c->v1] == xs[m];
        }
        if (leaf) continue;
        c->split = 1;
        c->xi = xs[m];
        int64_t vnew = -1;
        for (int64_t i = 0; i < nv && vnew < 0; i++)
            if (vert[i] == c->xi) vnew = i;
        if (vnew < 0) vert[vnew = nv++] = c->xi;
        c->lo = nc;
        c->hi = nc + 1;
        cell[nc++] = (Cell){l, m, c->v0, vnew, 0, 0, 0, 0};
        cell[nc++] = (Cell){m + 1, u, vnew, c->v1, 0, 0, 0, 0};
    }
    /* ehg139/ehg127: value and slope at every vertex */
    double *vval = av_malloc(sizeof(double) * 2 * (size_t)nv);
    double *dist = av_malloc(sizeof(double) * (size_t)n);
    double *b = av_malloc(sizeof(double) * 4 * (size_t)nf);
    int rc = 0;
    for (int64_t i = 0; i < nv && !rc; i++)
        rc = vertex_fit(xs + 1, ys + 1, n, nf, span, k, vert[i], dist, b, vval + 2 * i, err);
    /* ehg128: locate the leaf, Hermite interpolation between its vertices */
    for (int64_t i = 0; i < n && !rc; i++) {
        double z = x[i];
        int64_t p = 0;
        while (cell[p].split) p = z <= cell[p].xi ? cell[p].lo : cell[p].hi;
        double v0 = vert[cell[p].v0], v1 = vert[cell[p].v1];
        const double *g0 = vval + 2 * cell[p].v0, *g1 = vval + 2 * cell[p].v1;
        double h = (z - v0) / (v1 - v0);
        double phi0 = (1 - h) * (1 - h) * (1 + 2 * h), phi1 = h * h * (3 - 2 * h);
        double psi0 = h * (1 - h) * (1 - h), psi1 = h * h * (h - 1);
        fitted[i] = phi0 * g0[0] + phi1 * g1[0] + (psi0 * g0[1] + psi1 * g1[1]) * (v1 - v0);
    }
    free(vval);
    free(dist);
    free(b);
    free(vert);
    free(cell);
    free(xs);
    free(ys);
    return rc;
}

/* ---- seurat_v3 ------------------------------------------------------------------ */

int64_t av_hvg_stats_len(int64_t n_vars, int n_batch) {
    return (int64_t)n_batch * (2 * n_vars + 1);
}

static int batch_of(const int32_t *batch, int64_t stride, int64_t i) {
    return batch ? batch[i * stride] : 0;
}

void av_hvg_pass1(const AvCsr *x, const int32_t *batch, int64_t stride, int n_batch,
                  double *stats) {
    int64_t G = x->n_cols;
    for (int64_t i = 0; i < x->n_rows; i++) {
        int bt = batch_of(batch, stride, i);
        if (bt < 0 || bt >= n_batch) continue;
        double *s = stats + (int64_t)bt * (2 * G + 1);
        for (int64_t p = x->indptr[i]; p < x->indptr[i + 1]; p++) {
            double v = x->data[p];
            s[x->indices[p]] += v;
            s[G + x->indices[p]] += v * v;
        }
        s[2 * G] += 1;
    }
}

/* mean and variance (ddof 1) of gene j from sums over n cells */
static void mean_var(double sum, double sumsq, double n, double *mean, double *var) {
    *mean = sum / n;
    double v = n > 1 ? (sumsq - sum * *mean) / (n - 1) : NAN;
    *var = v < 0 ? 0 : v;
}

int av_hvg_fit(const double *stats, int64_t G, int n_batch, double span, double *reg_std,
               double *clip, char *err) {
    double *xs = av_malloc(sizeof(double) * (size_t)(G + 1));
    double *ys = av_malloc(sizeof(double) * (size_t)(G + 1));
    double *fit = av_malloc(sizeof(double) * (size_t)(G + 1));
    int64_t *idx = av_malloc(sizeof(int64_t) * (size_t)(G + 1));
    int rc = 0;
    for (int b = 0; b < n_batch && !rc; b++) {
        const double *s = stats + (int64_t)b * (2 * G + 1);
        double n = s[2 * G];
        double *rs = reg_std + (int64_t)b * G, *cl = clip + (int64_t)b * G;
        for (int64_t j = 0; j < G; j++) rs[j] = 1, cl[j] = 0;
        if (n == 0) continue;
        if (n < 2) {
            rc = av_err(err, "batch %d has a single cell: seurat_v3 needs at least 2 per batch", b);
            break;
        }
        int64_t m = 0;
        for (int64_t j = 0; j < G; j++) {
            double mean, var;
            mean_var(s[j], s[G + j], n, &mean, &var);
            if (var > 0) {
                xs[m] = log10(mean);
                ys[m] = log10(var);
                idx[m++] = j;
            }
        }
        if (m > 0) rc = av_loess_1d(xs, ys, m, span, 2, fit, err);
        if (rc) {
            char tmp[AV_ERRLEN];
            memcpy(tmp, err, AV_ERRLEN);
            av_err(err, "batch %d (%lld genes with non-zero variance): %s", b, (long long)m, tmp);
            break;
        }
        for (int64_t t = 0; t < m; t++) rs[idx[t]] = sqrt(pow(10.0, fit[t]));
        double vmax = sqrt(n);
        for (int64_t j = 0; j < G; j++) cl[j] = rs[j] * vmax + s[j] / n;
    }
    free(xs);
    free(ys);
    free(fit);
    free(idx);
    return rc;
}

void av_hvg_pass2(const AvCsr *x, const int32_t *batch, int64_t stride, int n_batch,
                  const double *clip, double *clipped) {
    int64_t G = x->n_cols;
    for (int64_t i = 0; i < x->n_rows; i++) {
        int bt = batch_of(batch, stride, i);
        if (bt < 0 || bt >= n_batch) continue;
        double *s = clipped + (int64_t)bt * 2 * G;
        const double *cl = clip + (int64_t)bt * G;
        for (int64_t p = x->indptr[i]; p < x->indptr[i + 1]; p++) {
            int32_t j = x->indices[p];
            double v = x->data[p];
            if (v > cl[j]) v = cl[j];
            s[j] += v;
            s[G + j] += v * v;
        }
    }
}

/* sort helpers: by value descending then gene order; by (rank, -nbatches, gene) */
static const double *g_key;
static int cmp_desc(const void *a, const void *b) {
    int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    if (g_key[i] > g_key[j]) return -1;
    if (g_key[i] < g_key[j]) return 1;
    return (i > j) - (i < j);
}
static const AvHvgResult *g_res;
static int cmp_select(const void *a, const void *b) {
    int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    double ri = g_res->rank[i], rj = g_res->rank[j];
    int ni = isnan(ri), nj = isnan(rj);
    if (ni != nj) return ni - nj;
    if (!ni && ri != rj) return ri < rj ? -1 : 1;
    if (g_res->nbatches[i] != g_res->nbatches[j])
        return g_res->nbatches[i] > g_res->nbatches[j] ? -1 : 1;
    return (i > j) - (i < j);
}

void av_hvg_finish(const double *stats, const double *clipped, const double *reg_std, int64_t G,
                   int n_batch, int64_t n_top, AvHvgResult *r) {
    memset(r, 0, sizeof *r);
    r->means = av_calloc((size_t)G + 1, sizeof(double));
    r->variances = av_calloc((size_t)G + 1, sizeof(double));
    r->variances_norm = av_calloc((size_t)G + 1, sizeof(double));
    r->rank = av_calloc((size_t)G + 1, sizeof(double));
    r->nbatches = av_calloc((size_t)G + 1, sizeof(int64_t));
    r->highly_variable = av_calloc((size_t)G + 1, 1);
    /* overall mean and variance */
    double *tot = av_calloc(2 * (size_t)G + 1, sizeof(double));
    double n_all = 0;
    for (int b = 0; b < n_batch; b++) {
        const double *s = stats + (int64_t)b * (2 * G + 1);
        for (int64_t j = 0; j < 2 * G; j++) tot[j] += s[j];
        n_all += s[2 * G];
    }
    for (int64_t j = 0; j < G; j++)
        mean_var(tot[j], tot[G + j], n_all, &r->means[j], &r->variances[j]);
    free(tot);
    /* per batch normalised variance and ranks */
    int64_t *order = av_malloc(sizeof(int64_t) * (size_t)(G + 1));
    double *nv = av_malloc(sizeof(double) * (size_t)(G + 1));
    /* ranks below n_top per gene and batch, for the medians */
    float *ranks = av_malloc(sizeof(float) * (size_t)(G * (n_batch > 0 ? n_batch : 1) + 1));
    int used = 0;
    for (int b = 0; b < n_batch; b++) {
        const double *s = stats + (int64_t)b * (2 * G + 1);
        double n = s[2 * G];
        if (n == 0) continue;
        const double *cs = clipped + (int64_t)b * 2 * G, *rs = reg_std + (int64_t)b * G;
        for (int64_t j = 0; j < G; j++) {
            double mean = s[j] / n;
            nv[j] = (1 / ((n - 1) * rs[j] * rs[j])) *
                    ((n * mean * mean) + cs[G + j] - 2 * cs[j] * mean);
            r->variances_norm[j] += nv[j];
        }
        for (int64_t j = 0; j < G; j++) order[j] = j;
        g_key = nv;
        qsort(order, (size_t)G, sizeof(int64_t), cmp_desc);
        for (int64_t t = 0; t < G; t++) ranks[(int64_t)used * G + order[t]] = (float)t;
        used++;
    }
    r->n_batches_used = used;
    float *vals = av_malloc(sizeof(float) * (size_t)(used + 1));
    for (int64_t j = 0; j < G; j++) {
        r->variances_norm[j] = used ? r->variances_norm[j] / used : NAN;
        int c = 0;
        for (int b = 0; b < used; b++) {
            float rk = ranks[(int64_t)b * G + j];
            if ((double)rk < (double)n_top) vals[c++] = rk;
        }
        r->nbatches[j] = c;
        if (c == 0) {
            r->rank[j] = NAN;
            continue;
        }
        /* median as numpy: the middle value, or the mean of the two middle values */
        for (int a = 1; a < c; a++)
            for (int e = a; e > 0 && vals[e - 1] > vals[e]; e--) {
                float t = vals[e];
                vals[e] = vals[e - 1];
                vals[e - 1] = t;
            }
        r->rank[j] = c % 2 ? (double)vals[c / 2] : ((double)vals[c / 2 - 1] + vals[c / 2]) / 2;
    }
    for (int64_t j = 0; j < G; j++) order[j] = j;
    g_res = r;
    qsort(order, (size_t)G, sizeof(int64_t), cmp_select);
    for (int64_t t = 0; t < G && t < n_top; t++) r->highly_variable[order[t]] = 1;
    free(vals);
    free(ranks);
    free(nv);
    free(order);
}

void av_hvg_result_free(AvHvgResult *r) {
    free(r->means);
    free(r->variances);
    free(r->variances_norm);
    free(r->rank);
    free(r->nbatches);
    free(r->highly_variable);
    memset(r, 0, sizeof *r);
}
