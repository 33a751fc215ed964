/* The count likelihood op's kernels: NB / ZINB / Poisson negative log-likelihood per cell
 * and its gradients. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math") /* see ops.c */
#endif
#include <math.h>
#include <omp.h>

#include "src/mathx.h"
#include "src/ops_impl.h"

/* Per-gene tables of the dispersion, laid out [code][gene] so that a cell's row is
 * contiguous: theta, log(theta + eps), 1 / (theta + eps), lgamma(theta), digamma(theta). */
static void theta_tables(const AvNode *nd, int64_t G, float *tab) {
    const AvTensor *pxr = nd->in[2];
    int64_t C = nd->disp == AV_DISP_GENE ? 1 : pxr->cols, nt = C * G;
    for (int64_t c = 0; c < C; c++)
        for (int64_t j = 0; j < G; j++) {
            float th = expf(pxr->v[nd->disp == AV_DISP_GENE ? j : j * C + c]);
            int64_t t = c * G + j;
            tab[t] = th;
            tab[nt + t] = logf(th + AV_NB_EPS);
            tab[2 * nt + t] = 1.0f / (th + AV_NB_EPS);
            tab[3 * nt + t] = av_lgamma(th);
            tab[4 * nt + t] = av_digamma(th);
        }
}

/* One cell of the NB / ZINB likelihood, in chunks of genes: every gene of the chunk as a
 * zero count (plain float arrays in and out, no branches: vectorizes), then the chunk's
 * non-zeros corrected from the zero-count values kept in small stack arrays (no
 * recomputation), with the lgamma / digamma differences of av_lgamma_digamma_diff.
 * Writes d ll / d mu, theta * d ll / d theta and d ll / d pi per gene; returns the cell's
 * log-likelihood. th, lt, ite: theta, log(theta + eps), 1 / (theta + eps) of the cell's
 * genes; lgt, dgt: lgamma and digamma of theta (per-gene tables) or NULL (computed when
 * needed); pxc: the cell's log thetas when they are per cell (then th, lt, ite are NULL). */
#define NLL_CHUNK 256
AV_CLONES static double count_nll_cell(int64_t G, float L, const float *r, const float *pr,
                                       const float *th_g, const float *lt_g, const float *ite_g,
                                       const float *lgt, const float *dgt, const float *pxc,
                                       const int32_t *idx, const float *cnt, int64_t nnz, float *a,
                                       float *b, float *c) {
    float th_s[NLL_CHUNK], lt_s[NLL_CHUNK], ite_s[NLL_CHUNK];
    float zl[NLL_CHUNK], ltm[NLL_CHUNK], spn[NLL_CHUNK], snp[NLL_CHUNK];
    double s = 0;
    int64_t k = 0;
    for (int64_t j0 = 0; j0 < G; j0 += NLL_CHUNK) {
        int64_t n = G - j0 < NLL_CHUNK ? G - j0 : NLL_CHUNK;
        const float *th, *lt, *ite;
        if (pxc) {
#pragma omp simd
            for (int64_t j = 0; j < n; j++) {
                float t = av_expf(pxc[j0 + j]);
                th_s[j] = t;
                lt_s[j] = av_logf(t + AV_NB_EPS);
                ite_s[j] = 1.0f / (t + AV_NB_EPS);
            }
            th = th_s, lt = lt_s, ite = ite_s;
        } else {
            th = th_g + j0, lt = lt_g + j0, ite = ite_g + j0;
        }
        const float *rj = r + j0;
        float *aj = a + j0, *bj = b + j0, *cj = c + j0, zs = 0;
        if (pr) {
            const float *pj = pr + j0;
#pragma omp simd reduction(+ : zs)
            for (int64_t j = 0; j < n; j++) {
                float theta = th[j], tm = theta + L * rj[j] + AV_NB_EPS, inv_tm = 1.0f / tm;
                float l_tm = av_logf(tm), d = lt[j] - l_tm;
                float nb = theta * d, dmu_nb = -theta * inv_tm;
                float dth_nb = d + theta * (ite[j] - inv_tm);
                /* softplus and sigmoid of nb - pi and of -pi */
                float x1 = nb - pj[j], e1 = av_expf(-fabsf(x1)), i1 = 1.0f / (1.0f + e1);
                float ei1 = e1 * i1, s_a = x1 >= 0.0f ? i1 : ei1;
                float sp_a = (x1 > 0.0f ? x1 : 0.0f) + av_log1pf_unit(e1);
                float x2 = -pj[j], e2 = av_expf(-fabsf(x2)), i2 = 1.0f / (1.0f + e2);
                float ei2 = e2 * i2, s_n = x2 >= 0.0f ? i2 : ei2;
                float sp_n = (x2 > 0.0f ? x2 : 0.0f) + av_log1pf_unit(e2);
                float ll = sp_a - sp_n;
                zs += ll;
                zl[j] = ll, ltm[j] = l_tm, spn[j] = sp_n, snp[j] = s_n;
                aj[j] = s_a * dmu_nb;
                bj[j] = theta * (s_a * dth_nb);
                cj[j] = s_n - s_a;
            }
        } else {
#pragma omp simd reduction(+ : zs)
            for (int64_t j = 0; j < n; j++) {
                float theta = th[j], tm = theta + L * rj[j] + AV_NB_EPS, inv_tm = 1.0f / tm;
                float l_tm = av_logf(tm), d = lt[j] - l_tm;
                float ll = theta * d;
                zs += ll;
                zl[j] = ll, ltm[j] = l_tm;
                aj[j] = -theta * inv_tm;
                bj[j] = theta * (d + theta * (ite[j] - inv_tm));
                cj[j] = 0.0f;
            }
        }
        s += zs;
        /* the chunk's non-zeros (indices are sorted) */
        for (; k < nnz && idx[k] < j0 + n; k++) {
            int64_t jj = idx[k], j = jj - j0;
            float x = cnt[k], theta = th[j], mu = L * r[jj];
            float tm = theta + mu + AV_NB_EPS, inv_tm = 1.0f / tm, l_tm = ltm[j];
            float lg_t = 0, dg_t = 0;
            int small = (float)(int)x == x && x <= 16.0f;
            if (!small) {
                lg_t = lgt ? lgt[jj] : av_lgamma(theta);
                dg_t = dgt ? dgt[jj] : av_digamma(theta);
            }
            float dlg, ddg;
            av_lgamma_digamma_diff(x, theta, lg_t, dg_t, &dlg, &ddg);
            float d = lt[j] - l_tm;
            float ll = theta * d + x * (av_logf(mu + AV_NB_EPS) - l_tm) + dlg - av_lgamma_count(x);
            float dmu = -theta * inv_tm + x / (mu + AV_NB_EPS) - x * inv_tm;
            float dth = d + theta * (ite[j] - inv_tm) - x * inv_tm + ddg;
            float dpi = 0.0f;
            if (pr) { /* -softplus(-pi) - pi + log NB(x) */
                ll += -pr[jj] - spn[j];
                dpi = snp[j] - 1.0f; /* = -sigmoid(pi) */
            }
            s += (double)ll - zl[j];
            a[jj] = dmu;
            b[jj] = theta * dth;
            c[jj] = dpi;
        }
    }
    return s;
}

/* Per cell: the NB / ZINB terms in count_nll_cell, Poisson inline. Saved per element for
 * the backward pass: d ll / d mu, theta * d ll / d theta and d ll / d pi. */
void av_count_nll_forward(AvGraph *g, AvNode *nd) {
    AvTensor *rho = nd->in[0], *lib = nd->in[1], *pxr = nd->in[2], *pi = nd->in[3], *y = nd->out;
    const AvBatch *bt = g->batch;
    int64_t n = g->n, G = rho->cols;
    int per_gene = pxr && nd->disp != AV_DISP_GENE_CELL;
    int64_t nt = per_gene ? (nd->disp == AV_DISP_GENE ? 1 : pxr->cols) * G : 0;
    float *tab = nd->aux2;
    if (per_gene) theta_tables(nd, G, tab);
    float *dmu = nd->aux, *dth = nd->aux + g->max_batch * G, *dpi = nd->aux + 2 * g->max_batch * G;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float L = expf(lib->v[i]);
        const float *r = rho->v + i * G;
        float *a = dmu + i * G, *b = dth + i * G, *c = dpi + i * G;
        int64_t k0 = bt->indptr[i], k1 = bt->indptr[i + 1];
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
        int64_t code = nd->disp == AV_DISP_GENE_BATCH || nd->disp == AV_DISP_GENE_LABEL
                           ? bt->cat[i * bt->n_cat + nd->code_col]
                           : 0;
        const float *pr = nd->lik == AV_LIK_ZINB ? pi->v + i * G : NULL;
        double s;
        if (per_gene) {
            const float *t0 = tab + code * G;
            s = count_nll_cell(G, L, r, pr, t0, t0 + nt, t0 + 2 * nt, t0 + 3 * nt, t0 + 4 * nt,
                               NULL, bt->indices + k0, bt->counts + k0, k1 - k0, a, b, c);
        } else {
            s = count_nll_cell(G, L, r, pr, NULL, NULL, NULL, NULL, NULL, pxr->v + i * G,
                               bt->indices + k0, bt->counts + k0, k1 - k0, a, b, c);
        }
        y->v[i] = (float)-s;
    }
}

void av_count_nll_backward(AvGraph *g, AvNode *nd) {
    AvTensor *rho = nd->in[0], *lib = nd->in[1], *pxr = nd->in[2], *pi = nd->in[3], *y = nd->out;
    const AvBatch *bt = g->batch;
    int64_t n = g->n, G = rho->cols;
    const float *dmu = nd->aux, *dth = nd->aux + g->max_batch * G,
                *dpi = nd->aux + 2 * g->max_batch * G;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float go = -y->g[i], L = expf(lib->v[i]);
        double dl = 0;
        for (int64_t j = 0; j < G; j++) {
            int64_t e = i * G + j;
            if (rho->g) rho->g[e] += go * L * dmu[e];
            dl += (double)rho->v[e] * dmu[e];
            if (pi && pi->g) pi->g[e] += go * dpi[e];
            if (pxr && nd->disp == AV_DISP_GENE_CELL && pxr->g) pxr->g[e] += go * dth[e];
        }
        if (lib->g) lib->g[i] += go * L * (float)dl;
    }
    if (pxr && nd->disp != AV_DISP_GENE_CELL) {
        /* per-gene parameters: accumulate serially over cells (cheap, race-free) */
        for (int64_t i = 0; i < n; i++) {
            float go = -y->g[i];
            int64_t stride = 1, base = 0;
            if (nd->disp != AV_DISP_GENE) {
                stride = pxr->cols;
                base = bt->cat[i * bt->n_cat + nd->code_col];
            }
            for (int64_t j = 0; j < G; j++) pxr->g[base + j * stride] += go * dth[i * G + j];
        }
    }
}
