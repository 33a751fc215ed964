/* Element-wise maths of the ops, written once as static inline functions that compile
 * for the CPU loops and inside CUDA kernels (AV_HD). The CPU tests check this
 * arithmetic, so the GPU runs checked code. */
#ifndef AV_MATHX_H
#define AV_MATHX_H
#include <math.h>

#include "src/rng.h"

#define AV_NB_EPS 1e-8f /* scvi-tools' eps inside every log of the NB family */

AV_HD float av_softplus(float x) {
    return x > 20.0f ? x : log1pf(expf(x));
}
AV_HD float av_sigmoid(float x) {
    return 1.0f / (1.0f + expf(-x));
}

/* log Gamma(x) for x > 0: shift to x >= 8, then Stirling's series. */
AV_HD float av_lgamma(float xf) {
    double x = xf, shift = 0.0;
    if (x < 8.0) {
        double p = 1.0;
        while (x < 8.0) {
            p *= x;
            x += 1.0;
        }
        shift = log(p);
    }
    double r = 1.0 / x, r2 = r * r;
    double s = (x - 0.5) * log(x) - x + 0.91893853320467274178 +
               r * (1.0 / 12 - r2 * (1.0 / 360 - r2 * (1.0 / 1260 - r2 / 1680)));
    return (float)(s - shift);
}

/* digamma(x) for x > 0: recurrence to x >= 8, then the asymptotic series. */
AV_HD float av_digamma(float xf) {
    double x = xf, acc = 0.0;
    while (x < 8.0) {
        acc -= 1.0 / x;
        x += 1.0;
    }
    double r = 1.0 / x, r2 = r * r;
    return (float)(acc + log(x) - 0.5 * r -
                   r2 * (1.0 / 12 - r2 * (1.0 / 120 - r2 * (1.0 / 252 - r2 / 240))));
}

/* Per-element log-likelihoods of the count models and their derivatives with respect to
 * the mean mu, the inverse dispersion theta and the zero-inflation logit pi. The NB
 * family is written as scvi-tools writes it (eps inside the logs). For a zero count the
 * lgamma terms cancel exactly and are skipped. lg_theta / dg_theta are lgamma(theta)
 * and digamma(theta), computed once per gene by the caller when theta is per gene. */
typedef struct {
    float ll, d_mu, d_theta, d_pi;
} AvLL;

AV_HD AvLL av_nb_ll(float x, float mu, float theta, float lg_theta, float dg_theta) {
    float l_t = logf(theta + AV_NB_EPS), l_m = logf(mu + AV_NB_EPS);
    float inv_tm = 1.0f / (theta + mu + AV_NB_EPS), l_tm = logf(theta + mu + AV_NB_EPS);
    AvLL r;
    r.ll = theta * (l_t - l_tm);
    r.d_mu = -theta * inv_tm;
    r.d_theta = (l_t - l_tm) + theta * (1.0f / (theta + AV_NB_EPS) - inv_tm);
    r.d_pi = 0.0f;
    if (x > 0.0f) {
        r.ll += x * (l_m - l_tm) + av_lgamma(x + theta) - lg_theta - av_lgamma(x + 1.0f);
        r.d_mu += x / (mu + AV_NB_EPS) - x * inv_tm;
        r.d_theta += -x * inv_tm + av_digamma(x + theta) - dg_theta;
    }
    return r;
}

AV_HD AvLL av_zinb_ll(float x, float mu, float theta, float pi, float lg_theta, float dg_theta) {
    /* a = log NB(0) - pi; zero: softplus(a) - softplus(-pi); positive: -softplus(-pi) + a + ... */
    AvLL nb = av_nb_ll(x, mu, theta, lg_theta, dg_theta);
    float sp_neg_pi = av_softplus(-pi);
    AvLL r;
    if (x < AV_NB_EPS) {
        float a = nb.ll - pi, s = av_sigmoid(a);
        r.ll = av_softplus(a) - sp_neg_pi;
        r.d_mu = s * nb.d_mu;
        r.d_theta = s * nb.d_theta;
        r.d_pi = -s + av_sigmoid(-pi);
    } else {
        r.ll = nb.ll - pi - sp_neg_pi;
        r.d_mu = nb.d_mu;
        r.d_theta = nb.d_theta;
        r.d_pi = -av_sigmoid(pi);
    }
    return r;
}

AV_HD AvLL av_poisson_ll(float x, float mu) {
    AvLL r = {-mu, -1.0f, 0.0f, 0.0f};
    if (x > 0.0f) {
        r.ll += x * logf(mu) - av_lgamma(x + 1.0f);
        r.d_mu += x / mu;
    }
    return r;
}

/* KL(N(mu, sqrt(v)) || N(m, sqrt(pv))) per dimension, with d/dmu and d/dv. */
AV_HD float av_kl_normal(float mu, float v, float m, float pv, float *d_mu, float *d_v) {
    float dm = mu - m;
    *d_mu = dm / pv;
    *d_v = 0.5f / pv - 0.5f / v;
    return 0.5f * logf(pv / v) + (v + dm * dm) / (2.0f * pv) - 0.5f;
}

/* Standard normal pair from two counter-based uniforms (Box-Muller). */
AV_HD void av_normal2(AvRng4 r, float *a, float *b, float *c, float *d) {
    float u1 = av_u01(r.v[0]), u2 = av_u01(r.v[1]), u3 = av_u01(r.v[2]), u4 = av_u01(r.v[3]);
    float r1 = sqrtf(-2.0f * logf(u1)), r2 = sqrtf(-2.0f * logf(u3));
    *a = r1 * cosf(6.2831853f * u2);
    *b = r1 * sinf(6.2831853f * u2);
    *c = r2 * cosf(6.2831853f * u4);
    *d = r2 * sinf(6.2831853f * u4);
}

#endif
