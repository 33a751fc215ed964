/* The count likelihood op's kernels: NB / ZINB / Poisson negative log-likelihood per cell
 * and its gradients. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math") /* see ops.c */
#endif
#include <math.h>
#include <omp.h>
#include <stdlib.h>

#include "src/isa.h"
#include "src/mathx.h"
#include "src/ops_impl.h"
#include "src/util.h"

/* lgamma(theta) and digamma(theta) of n thetas (stride 1), vectorized: av_lgamma_digamma's
 * shift to x >= 8 (a fixed 8 steps, each lane keeping its product p past 8 and its
 * derivative p' for the digamma shift -p' / p: one division, not one per step) and series,
 * with av_log_d for libm's log. Only the series of the rarer counts (above 16) read these. */
AV_ISA_BODY void lgamma_digamma_row_body(int64_t n, const float *th, float *lg, float *dg) {
#pragma omp simd
    for (int64_t j = 0; j < n; j++) {
        double x = th[j], p = 1.0, dp = 0.0;
#pragma GCC unroll 8
        for (int q = 0; q < 8; q++) {
            int on = x < 8.0;
            double np = p * x, ndp = dp * x + p, nx = x + 1.0;
            p = on ? np : p, dp = on ? ndp : dp, x = on ? nx : x;
        }
        double r = 1.0 / x, r2 = r * r, lx = av_log_d(x);
        lg[j] = (float)((x - 0.5) * lx - x + 0.91893853320467274178 +
                        r * (1.0 / 12 - r2 * (1.0 / 360 - r2 * (1.0 / 1260 - r2 / 1680))) -
                        av_log_d(p));
        dg[j] = (float)(-dp / p + lx - 0.5 * r -
                        r2 * (1.0 / 12 - r2 * (1.0 / 120 - r2 * (1.0 / 252 - r2 / 240))));
    }
}
AV_DISPATCH_VOID(lgamma_digamma_row, (int64_t n, const float *th, float *lg, float *dg),
                 (n, th, lg, dg))

/* Per-gene tables of the dispersion, laid out [code][gene] so that a cell's row is
 * contiguous: theta, log(theta + eps), 1 / (theta + eps), lgamma(theta), digamma(theta). */
static void theta_tables(const AvNode *nd, int64_t G, float *tab) {
    const AvTensor *pxr = nd->in[2];
    int64_t C = nd->disp == AV_DISP_GENE ? 1 : pxr->cols, nt = C * G;
    for (int64_t c = 0; c < C; c++) {
        for (int64_t j = 0; j < G; j++) {
            float th = expf(pxr->v[nd->disp == AV_DISP_GENE ? j : j * C + c]);
            int64_t t = c * G + j;
            tab[t] = th;
            tab[nt + t] = logf(th + AV_NB_EPS);
            tab[2 * nt + t] = 1.0f / (th + AV_NB_EPS);
        }
        lgamma_digamma_row(G, tab + c * G, tab + 3 * nt + c * G, tab + 4 * nt + c * G);
    }
}

/* Per-thread scratch of count_nll_cell for G genes: the cell's thetas when they are per
 * cell; per gene x, log(mu + eps), lgamma terms, digamma terms of the non-zero counts
 * (nzv: four planes of gp; x = 0 marks a zero count and is all that is reset between
 * cells); the non-zeros gathered for their vectorized lgamma / digamma terms. */
typedef struct {
    float *th, *lt, *ite;                /* theta, log(theta + eps), 1 / (theta + eps) (per cell) */
    float *zl;                           /* per gene: log NB(x) */
    float *nzv;                          /* planes: x, log(mu + eps), lgamma terms, digamma terms */
    int32_t *vj;                         /* gathered non-zeros: gene */
    float *vx, *vth, *vmu, *vlgc, *vcls; /* count, theta, mu, lgamma(x + 1), 1: series */
    float *vlg, *vdg; /* lgamma(theta), digamma(theta) (series) or the differences (scalar) */
    int64_t gp;       /* the gathered arrays' size: G rounded up to 16, plus 32 */
} NllScratch;

static void *nll_scratch_alloc(NllScratch *w, int64_t G) {
    size_t gp = (size_t)(G + 15) / 16 * 16 + 32; /* room for two padded ranges */
    char *m = av_malloc(gp * (15 * sizeof(float) + sizeof(int32_t))), *q = m;
    float **fs[11] = {&w->th,  &w->lt,   &w->ite,  &w->zl,  &w->vx, &w->vth,
                      &w->vmu, &w->vlgc, &w->vcls, &w->vlg, &w->vdg};
    for (int k = 0; k < 11; k++) *fs[k] = (float *)(void *)q, q += gp * sizeof(float);
    w->nzv = (float *)(void *)q, q += 4 * gp * sizeof(float);
    for (size_t j = 0; j < 4 * gp; j++) w->nzv[j] = 0.0f; /* all counts zero */
    w->vj = (int32_t *)(void *)q;
    w->gp = (int64_t)gp;
    return m;
}

/* The gathered non-zeros' terms into the per-gene records: lgamma(x + theta) -
 * lgamma(theta) - lgamma(x + 1), digamma(x + theta) - digamma(theta) and log(mu + eps).
 * Lanes [0, r1): rising factorials of whole counts x <= 16 (the 15 possible factors
 * unrolled, each lane keeping p, p' past its count); [s0, s1): the series of
 * z = x + theta >= 8 against lgamma(theta), digamma(theta) (vcls 1) or the differences
 * computed already (vcls 0). One log of a double and one division each:
 * av_lgamma_digamma_diff's arithmetic, vectorized. Ranges of whole vectors; the results
 * replace the inputs vlg, vdg, vmu, then go to the per-gene records. */
AV_ISA_BODY void nll_nonzero_terms_body(int nr, int r1, int s0, int ns, int s1,
                                        const NllScratch *w) {
    const float *vx = w->vx, *vth = w->vth, *vmu = w->vmu, *vlgc = w->vlgc, *vcls = w->vcls;
    float *vlg = w->vlg, *vdg = w->vdg, *vme = w->vmu;
#pragma omp simd
    for (int t = 0; t < r1; t++) {
        double x = vx[t], th = vth[t], p = th, dp = 1.0;
#pragma GCC unroll 16
        for (int q = 1; q < 16; q++) {
            double u = th + q, np = p * u, ndp = dp * u + p;
            int on = q < x;
            p = on ? np : p, dp = on ? ndp : dp;
        }
        vlg[t] = (float)av_log_d(p) - vlgc[t], vdg[t] = (float)(dp / p);
        vme[t] = av_logf(vmu[t] + AV_NB_EPS);
    }
#pragma omp simd
    for (int t = s0; t < s1; t++) {
        double z = (double)vx[t] + vth[t];
        double lg = av_log_d(z), rq = 1.0 / z, r2 = rq * rq;
        double lgz = (z - 0.5) * lg - z + 0.91893853320467274178 +
                     rq * (1.0 / 12 - r2 * (1.0 / 360 - r2 * (1.0 / 1260 - r2 / 1680)));
        double dgz =
            lg - 0.5 * rq - r2 * (1.0 / 12 - r2 * (1.0 / 120 - r2 * (1.0 / 252 - r2 / 240)));
        float dl1 = (float)lgz - vlg[t], dd1 = (float)dgz - vdg[t];
        float ser = vcls[t];
        vlg[t] = (ser > 0.0f ? dl1 : vlg[t]) - vlgc[t], vdg[t] = ser > 0.0f ? dd1 : vdg[t];
        vme[t] = av_logf(vmu[t] + AV_NB_EPS);
    }
    /* the records of the real lanes [0, nr) and [ns, s1) (scatters where the target has
     * them: AVX-512; the counts are in already) */
    const int32_t *vj = w->vj;
    float *nzl = w->nzv + w->gp, *nzg = nzl + w->gp, *nzd = nzg + w->gp;
#pragma omp simd
    for (int t = 0; t < nr; t++) {
        int32_t j = vj[t];
        nzl[j] = vme[t], nzg[j] = vlg[t], nzd[j] = vdg[t];
    }
#pragma omp simd
    for (int t = ns; t < s1; t++) {
        int32_t j = vj[t];
        nzl[j] = vme[t], nzg[j] = vlg[t], nzd[j] = vdg[t];
    }
}
AV_DISPATCH_VOID(nll_nonzero_terms, (int nr, int r1, int s0, int ns, int s1, const NllScratch *w),
                 (nr, r1, s0, ns, s1, w))

/* One cell's non-zeros into the per-gene records of the scratch: classified and gathered
 * here (rising factorials from the front of the gathered arrays, the others from the
 * back), their terms vectorized in nll_nonzero_terms; the rare cases that neither the
 * rising factorial nor the series covers (x + theta < 8 with a count past 16 or not
 * whole, per-cell thetas) computed scalar. Explicit zeros stay zero counts, as in
 * scvi-tools (x < eps). */
static void nll_scatter_counts(int64_t nnz, const int32_t *idx, const float *cnt, float L,
                               const float *r, const float *th, const float *lgt, const float *dgt,
                               const NllScratch *w) {
    int32_t *vj = w->vj;
    float *vx = w->vx, *vth = w->vth, *vmu = w->vmu, *vlgc = w->vlgc, *vcls = w->vcls;
    float *vlg = w->vlg, *vdg = w->vdg, *nzx = w->nzv;
    int gp = (int)w->gp, nr = 0, ns = gp;
    for (int64_t t = 0; t < nnz; t++) {
        int32_t j = idx[t];
        float x = cnt[t], theta = th[j];
        if (!(x > 0.0f)) continue;
        int k = av_rising_count(x, theta), v;
        if (k) {
            v = nr++;
        } else {
            v = --ns;
            if (lgt && x + theta >= 8.0f) {
                vcls[v] = 1.0f, vlg[v] = lgt[j], vdg[v] = dgt[j];
            } else {
                float lg_t = lgt ? lgt[j] : av_lgamma(theta);
                float dg_t = dgt ? dgt[j] : av_digamma(theta);
                vcls[v] = 0.0f;
                av_lgamma_digamma_diff(x, theta, lg_t, dg_t, &vlg[v], &vdg[v]);
            }
        }
        vj[v] = j, vx[v] = x, vth[v] = theta, vmu[v] = L * r[j], vlgc[v] = av_lgamma_count(x);
        nzx[j] = x;
    }
    /* padding lanes to whole vectors: a count of 1 */
    int r1 = (nr + 15) / 16 * 16, s0 = gp - (gp - ns + 15) / 16 * 16;
    for (int t = nr; t < r1; t++) vx[t] = vth[t] = vmu[t] = 1.0f, vlgc[t] = 0.0f;
    for (int t = s0; t < ns; t++)
        vx[t] = 8.0f, vth[t] = vmu[t] = 1.0f, vlgc[t] = vlg[t] = vdg[t] = vcls[t] = 0.0f;
    nll_nonzero_terms(nr, r1, s0, ns, gp, w);
}

/* Resets the per-gene records of a cell's non-zeros to zero counts. */
static void nll_clear_counts(int64_t nnz, const int32_t *idx, const NllScratch *w) {
    for (int64_t t = 0; t < nnz; t++) w->nzv[idx[t]] = 0.0f;
}

#define NLL_CHUNK 512

/* Per-cell thetas (gene-cell dispersion) from the cell's log thetas, into the scratch. */
AV_ISA_BODY void nll_cell_thetas_body(int64_t G, const float *pxc, const NllScratch *w) {
    float *th = w->th, *lt = w->lt, *ite = w->ite;
#pragma omp simd
    for (int64_t j = 0; j < G; j++) {
        float t = av_expf(pxc[j]);
        th[j] = t;
        lt[j] = av_logf(t + AV_NB_EPS);
        ite[j] = 1.0f / (t + AV_NB_EPS);
    }
}
AV_DISPATCH_VOID(nll_cell_thetas, (int64_t G, const float *pxc, const NllScratch *w), (G, pxc, w))

/* One cell of the NB / ZINB likelihood, every gene in dense loops over plain arrays (no
 * branches: they vectorize), with the cell's counts and their lgamma / digamma terms
 * scattered into dense per-gene records first (nll_scatter_counts; x = 0 for a zero
 * count, whose terms are selected from the zero-count formulas). In chunks that stay in
 * L1: the NB log-likelihood and d / d mu, d / d theta; then the zero inflation in a
 * second loop (two short dependency chains overlap better than one long one). Writes
 * d ll / d mu, theta * d ll / d theta and d ll / d pi per gene; returns the cell's
 * log-likelihood. th, lt, ite: theta, log(theta + eps), 1 / (theta + eps) of the genes. */
AV_ISA_BODY double count_nll_cell_body(int64_t G, float L, const float *r, const float *pr,
                                       const float *th, const float *lt, const float *ite,
                                       const NllScratch *w, float *a, float *b, float *c) {
    const float *nzx = w->nzv, *nzl = nzx + w->gp, *nzg = nzl + w->gp, *nzd = nzg + w->gp;
    float *zl = w->zl;
    double zs = 0;
    float ktb = pr ? 0.0f : 1.0f;
    for (int64_t j0 = 0; j0 < G; j0 += NLL_CHUNK) {
        int64_t j1 = G - j0 < NLL_CHUNK ? G : j0 + NLL_CHUNK;
#pragma omp simd
        for (int64_t j = j0; j < j1; j++) {
            float x = nzx[j], lme = nzl[j], lgx = nzg[j], dgx = nzd[j];
            float theta = th[j], mu = L * r[j], me = mu + AV_NB_EPS, tm = theta + mu + AV_NB_EPS;
            float q = 1.0f / (me * tm), inv_tm = me * q; /* one division for both */
            float l_tm = av_logf(tm), d = lt[j] - l_tm, nb = theta * d;
            /* zero count: log NB(0) = theta d and its derivatives; a positive count adds
             * x (log me - log tm) + lgamma terms; d / d mu = x / me - (theta + x) / tm =
             * theta (x - me) / (me tm) (the cancelling difference taken algebraically) */
            float llx = nb + x * (lme - l_tm) + lgx;
            float dmu0 = -theta * inv_tm, dmux = theta * (x - me) * q;
            float dth0 = d + theta * (ite[j] - inv_tm), dthx = dth0 - x * inv_tm + dgx;
            float tdth0 = theta * dth0, tdthx = theta * dthx;
            float dthz = ktb > 0.0f ? tdth0 : dth0, dthp = ktb > 0.0f ? tdthx : dthx;
            zl[j] = x > 0.0f ? llx : nb;
            a[j] = x > 0.0f ? dmux : dmu0;
            b[j] = x > 0.0f ? dthp : dthz;
        }
        if (pr) {
#pragma omp simd reduction(+ : zs)
            for (int64_t j = j0; j < j1; j++) {
                /* zero count: softplus(log NB(0) - pi) - softplus(-pi); positive count:
                 * -pi - softplus(-pi) + log NB(x), with -softplus(-pi) as the zero-count
                 * terms of log NB = -inf (log NB far below any pi: sigmoid 0) */
                float x = nzx[j], nbx = zl[j], pi = pr[j], s_a, s_n;
                float nb0 = x > 0.0f ? -1e30f : nbx;
                float l0 = av_zinb_zero_terms(nb0, pi, &s_a, &s_n);
                float lx = (nbx - pi) + l0, ll = x > 0.0f ? lx : l0;
                zs += ll;
                float sa = x > 0.0f ? 1.0f : s_a, dpi = x > 0.0f ? s_n - 1.0f : s_n - s_a;
                a[j] = sa * a[j];
                b[j] = th[j] * (sa * b[j]);
                c[j] = dpi; /* d / d pi; -sigmoid(pi) for a positive count */
            }
        } else {
#pragma omp simd reduction(+ : zs)
            for (int64_t j = j0; j < j1; j++) zs += zl[j], c[j] = 0.0f;
        }
    }
    return zs;
}
AV_DISPATCH(double, count_nll_cell,
            (int64_t G, float L, const float *r, const float *pr, const float *th, const float *lt,
             const float *ite, const NllScratch *w, float *a, float *b, float *c),
            (G, L, r, pr, th, lt, ite, w, a, b, c))

/* Per cell: the NB / ZINB terms in count_nll_cell, Poisson inline. Saved per element for
 * the backward pass: d ll / d mu, theta * d ll / d theta and d ll / d pi. */
void av_count_nll_forward(AvGraph *g, AvNode *nd) {
    AvTensor *rho = nd->in[0], *lib = nd->in[1], *pxr = nd->in[2], *pi = nd->in[3], *y = nd->out;
    const AvBatch *bt = g->batch;
    int64_t n = g->n, G = rho->cols;
    int per_gene = pxr && nd->disp != AV_DISP_GENE_CELL;
    int coded = nd->disp == AV_DISP_GENE_BATCH || nd->disp == AV_DISP_GENE_LABEL;
    int64_t C = per_gene ? (nd->disp == AV_DISP_GENE ? 1 : pxr->cols) : 0, nt = C * G;
    float *tab = nd->aux2;
    if (per_gene) theta_tables(nd, G, tab);
    float *dmu = nd->aux, *dth = nd->aux + g->max_batch * G, *dpi = nd->aux + 2 * g->max_batch * G;
#pragma omp parallel
    {
        NllScratch w;
        void *wm = nd->lik == AV_LIK_POISSON ? NULL : nll_scratch_alloc(&w, G);
#pragma omp for schedule(static) nowait
        for (int64_t i = 0; i < n; i++) {
            float L = expf(lib->v[i]);
            const float *r = rho->v + i * G;
            float *a = dmu + i * G, *b = dth + i * G, *c = dpi + i * G;
            int64_t k0 = bt->indptr[i], k1 = bt->indptr[i + 1];
#if defined(__GNUC__)
            /* the next cell's rho row, read at random by its non-zeros before the dense loop
             * streams it (this thread's next cell under the static schedule) */
            if (i + 1 < n)
                for (int64_t q = 0; q < G; q += 16) __builtin_prefetch(r + G + q, 0, 3);
#endif
            if (nd->lik == AV_LIK_POISSON) {
                double s = 0;
                for (int64_t j = 0; j < G; j++) {
                    float mu = L * r[j];
                    s -= mu;
                    a[j] = -1.0f, b[j] = 0.0f, c[j] = 0.0f;
                }
                for (int64_t k = k0; k < k1; k++) {
                    int64_t j = bt->indices[k];
                    float x = bt->counts[k], mu = L * r[j];
                    s += x * logf(mu) - av_lgamma_count(x);
                    a[j] += x / mu;
                }
                y->v[i] = (float)-s;
                continue;
            }
            const float *pr = nd->lik == AV_LIK_ZINB ? pi->v + i * G : NULL;
            const int32_t *idx = bt->indices + k0;
            const float *cnt = bt->counts + k0;
            double s;
            if (per_gene) {
                int64_t code = coded ? bt->cat[i * bt->n_cat + nd->code_col] : 0;
                const float *t0 = tab + code * G;
                nll_scatter_counts(k1 - k0, idx, cnt, L, r, t0, t0 + 3 * nt, t0 + 4 * nt, &w);
                s = count_nll_cell(G, L, r, pr, t0, t0 + nt, t0 + 2 * nt, &w, a, b, c);
            } else {
                nll_cell_thetas(G, pxr->v + i * G, &w);
                nll_scatter_counts(k1 - k0, idx, cnt, L, r, w.th, NULL, NULL, &w);
                s = count_nll_cell(G, L, r, pr, w.th, w.lt, w.ite, &w, a, b, c);
            }
            nll_clear_counts(k1 - k0, idx, &w);
            y->v[i] = (float)-s;
        }
        free(wm);
    }
}

/* y = a x where y is assigned, y += a x where it accumulates (inlined into its caller's
 * clones, so it vectorizes for their targets). */
static inline __attribute__((always_inline)) void
scale_into(int64_t n, float a, const float *restrict x, float *restrict y, unsigned assign) {
    if (assign) {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) y[j] = a * x[j];
    } else {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) y[j] += a * x[j];
    }
}

/* One cell's backward: rho's gradient (gl = go * L), pi's and the per-cell theta's
 * (NULL when absent; added to, or assigned where the node is their only writer: asg bits
 * 0, 3 and 2 as the node's input slots); returns sum_j rho_j dmu_j for the library's. */
AV_ISA_BODY double nll_cell_backward_body(int64_t G, float go, float gl, const float *rho,
                                          const float *dmu, const float *dth, const float *dpi,
                                          float *rg, float *pg, float *tg, unsigned asg) {
    double dl = 0;
    if (rg && (asg & 1u)) {
#pragma omp simd reduction(+ : dl)
        for (int64_t j = 0; j < G; j++) {
            rg[j] = gl * dmu[j];
            dl += (double)rho[j] * dmu[j];
        }
    } else if (rg) {
#pragma omp simd reduction(+ : dl)
        for (int64_t j = 0; j < G; j++) {
            rg[j] += gl * dmu[j];
            dl += (double)rho[j] * dmu[j];
        }
    } else {
#pragma omp simd reduction(+ : dl)
        for (int64_t j = 0; j < G; j++) dl += (double)rho[j] * dmu[j];
    }
    if (pg) scale_into(G, go, dpi, pg, asg & 8u);
    if (tg) scale_into(G, go, dth, tg, asg & 4u);
    return dl;
}
AV_DISPATCH(double, nll_cell_backward,
            (int64_t G, float go, float gl, const float *rho, const float *dmu, const float *dth,
             const float *dpi, float *rg, float *pg, float *tg, unsigned asg),
            (G, go, gl, rho, dmu, dth, dpi, rg, pg, tg, asg))

/* Per-gene thetas: genes [j0, j1) of the gradient (of C codes per gene when code is not
 * NULL), summed over the cells in order (each gene is one thread's, so the result does not
 * depend on the thread count); zeroed first when assigned. */
AV_ISA_BODY void nll_gene_backward_body(int64_t n, int64_t G, int64_t j0, int64_t j1,
                                        const float *yg, const float *dth, const int32_t *code,
                                        int64_t code_stride, int64_t C, int assign, float *tg) {
    if (assign)
        for (int64_t j = j0 * C; j < j1 * C; j++) tg[j] = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        float go = -yg[i];
        const float *d = dth + i * G;
        if (!code) {
#pragma omp simd
            for (int64_t j = j0; j < j1; j++) tg[j] += go * d[j];
        } else {
            float *t = tg + code[i * code_stride];
            for (int64_t j = j0; j < j1; j++) t[j * C] += go * d[j];
        }
    }
}
AV_DISPATCH_VOID(nll_gene_backward,
                 (int64_t n, int64_t G, int64_t j0, int64_t j1, const float *yg, const float *dth,
                  const int32_t *code, int64_t code_stride, int64_t C, int assign, float *tg),
                 (n, G, j0, j1, yg, dth, code, code_stride, C, assign, tg))

void av_count_nll_backward(AvGraph *g, AvNode *nd) {
    AvTensor *rho = nd->in[0], *lib = nd->in[1], *pxr = nd->in[2], *pi = nd->in[3], *y = nd->out;
    const AvBatch *bt = g->batch;
    int64_t n = g->n, G = rho->cols;
    const float *dmu = nd->aux, *dth = nd->aux + g->max_batch * G,
                *dpi = nd->aux + 2 * g->max_batch * G;
    int gene_cell = pxr && nd->disp == AV_DISP_GENE_CELL && pxr->g;
    int per_gene = pxr && nd->disp != AV_DISP_GENE_CELL && pxr->g;
    const int32_t *code = NULL;
    int64_t C = 1;
    if (per_gene && nd->disp != AV_DISP_GENE) {
        code = bt->cat + nd->code_col;
        C = pxr->cols;
    }
    unsigned asg = (unsigned)av_assigns(nd, 0) | (unsigned)av_assigns(nd, 2) << 2 |
                   (unsigned)av_assigns(nd, 3) << 3;
    int asg_lib = av_assigns(nd, 1);
    /* gene blocks for the per-gene pass: one or two per thread, whole vectors; long rows
     * of dth per cell read better than many short ones */
    int64_t nth = omp_get_max_threads(), gb = (G + 2 * nth - 1) / (2 * nth);
    gb = gb < 64 ? 64 : (gb + 15) / 16 * 16;
    int64_t nblk = (G + gb - 1) / gb;
#pragma omp parallel
    {
#pragma omp for schedule(static) nowait /* the per-gene pass does not read these results */
        for (int64_t i = 0; i < n; i++) {
            float go = -y->g[i], L = expf(lib->v[i]);
            int64_t e = i * G;
            double dl = nll_cell_backward(
                G, go, go * L, rho->v + e, dmu + e, dth + e, dpi + e, rho->g ? rho->g + e : NULL,
                pi && pi->g ? pi->g + e : NULL, gene_cell ? pxr->g + e : NULL, asg);
            if (lib->g) lib->g[i] = (asg_lib ? 0.0f : lib->g[i]) + go * L * (float)dl;
        }
        if (per_gene) {
#pragma omp for schedule(static)
            for (int64_t q = 0; q < nblk; q++) {
                int64_t j1 = (q + 1) * gb < G ? (q + 1) * gb : G;
                nll_gene_backward(n, G, q * gb, j1, y->g, dth, code, bt->n_cat, C,
                                  av_assigns(nd, 2), pxr->g);
            }
        }
    }
}
