/* Element-wise maths of the ops, written once as static inline functions that compile
 * for the CPU loops and inside CUDA kernels (AV_HD). The CPU tests check this
 * arithmetic, so the GPU runs checked code. */
#ifndef AV_MATHX_H
#define AV_MATHX_H
#include <math.h>

#include "src/rng.h"

#define AV_NB_EPS 1e-8f /* scvi-tools' eps inside every log of the NB family */

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

/* lgamma and digamma of the same x > 0 with one shift and one log (the NB terms of a
 * non-zero count need both of x + theta). */
AV_HD void av_lgamma_digamma(float xf, float *lg, float *dg) {
    double x = xf, p = 1.0, acc = 0.0;
    while (x < 8.0) {
        p *= x;
        acc -= 1.0 / x;
        x += 1.0;
    }
    double r = 1.0 / x, r2 = r * r, lx = log(x);
    *lg = (float)((x - 0.5) * lx - x + 0.91893853320467274178 +
                  r * (1.0 / 12 - r2 * (1.0 / 360 - r2 * (1.0 / 1260 - r2 / 1680))) - log(p));
    *dg = (float)(acc + lx - 0.5 * r -
                  r2 * (1.0 / 12 - r2 * (1.0 / 120 - r2 * (1.0 / 252 - r2 / 240))));
}

/* lgamma(x + theta) - lgamma(theta) and digamma(x + theta) - digamma(theta) for a count
 * x > 0. Whole counts up to 16 use the rising factorial p = theta (theta + 1) ...
 * (theta + x - 1): the first is log p, the second p' / p, both carried in double (one log,
 * one division, no series); other x, and thetas large enough to overflow p, fall back to
 * the series with lg_t = lgamma(theta), dg_t = digamma(theta). More accurate than the
 * difference of two float lgammas, and about ten times cheaper for the usual small counts.
 * av_rising_count(x, theta) says which: x as a whole number 1..16 when the rising factorial
 * applies, else 0. */
AV_HD int av_rising_count(float x, float theta) {
    int k = (int)x;
    return (float)k == x && k >= 1 && k <= 16 && theta < 1e15f ? k : 0;
}

AV_HD void av_lgamma_digamma_diff(float x, float theta, float lg_t, float dg_t, float *dlg,
                                  float *ddg) {
    int k = av_rising_count(x, theta);
    if (k) {
        double t = theta, p = t, dp = 1.0;
        for (int q = 1; q < k; q++) {
            double u = t + q;
            dp = dp * u + p;
            p *= u;
        }
        *dlg = (float)log(p);
        *ddg = (float)(dp / p);
        return;
    }
    float lg, dg;
    av_lgamma_digamma(x + theta, &lg, &dg);
    *dlg = lg - lg_t;
    *ddg = dg - dg_t;
}

/* lgamma(x + 1) of a count: a table below 4096 (filled once, before any thread starts:
 * av_lgamma_table_init), the series above. */
#define AV_LGF_TABLE 4096
#ifndef __CUDACC__
extern float av_lgamma_factorial_table[AV_LGF_TABLE];
void av_lgamma_table_init(void);
#endif
AV_HD float av_lgamma_count(float x) {
#ifdef __CUDACC__
    return av_lgamma(x + 1.0f); /* no host table on the device */
#else
    int k = (int)x;
    return (k >= 0 && k < AV_LGF_TABLE && (float)k == x) ? av_lgamma_factorial_table[k]
                                                         : av_lgamma(x + 1.0f);
#endif
}

/* Branch-free float exp and log (Cephes-style range reduction and minimax polynomials,
 * about 1 ulp on the ranges used here) so that the per-element likelihood loops
 * vectorize; libm's calls do not. av_expf_nohi: exp for x <= 88.3 (only the lower clamp;
 * the exp(-|x|) of softplus and sigmoid). */
AV_HD float av_expf_nohi(float x) {
    x = x < -87.3f ? -87.3f : x; /* ternaries: vectorize, fminf may not */
    /* n = nearest integer to x / ln 2 by the 1.5 * 2^23 shift: floorf would keep the
     * loop scalar (it may raise "inexact" under the default -ftrapping-math) */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union {
        float f;
        int32_t i;
    } u = {.i = (int32_t)((uint32_t)((int32_t)n + 127) << 23)}; /* no signed shift (UB) */
    return p * u.f;
}

AV_HD float av_expf(float x) {
    return av_expf_nohi(x > 88.3f ? 88.3f : x);
}

/* natural log for x > 0 (finite, normal) */
AV_HD float av_logf(float x) {
    union {
        float f;
        int32_t i;
    } u = {.f = x};
    int32_t e = ((u.i >> 23) & 0xff) - 126;
    u.i = (u.i & 0x007fffff) | 0x3f000000; /* mantissa in [0.5, 1) */
    float m = u.f;
    int small = m < 0.70710678118654752440f;
    e -= small;
    m = m + (small ? m : 0.0f) - 1.0f; /* selects values only: see av_log1pf_unit */
    float z = m * m;
    float y = 7.0376836292e-2f;
    y = y * m - 1.1514610310e-1f;
    y = y * m + 1.1676998740e-1f;
    y = y * m - 1.2420140846e-1f;
    y = y * m + 1.4249322787e-1f;
    y = y * m - 1.6668057665e-1f;
    y = y * m + 2.0000714765e-1f;
    y = y * m - 2.4999993993e-1f;
    y = y * m + 3.3333331174e-1f;
    y = y * m * z;
    float fe = (float)e;
    y += -2.12194440e-4f * fe - 0.5f * z;
    return m + y + 0.693359375f * fe;
}

/* log(1 + e) for e >= 0 (finite), accurate for tiny e (the u - 1 correction).
 * Vectorization note, for every function here: a conditional must select between values
 * already computed, never hold arithmetic in its arms. GCC (default -ftrapping-math)
 * will not if-convert an arm that may trap, such as a division or a multiplication,
 * and then leaves the whole loop scalar even under `omp simd`. */
AV_HD float av_log1pf_unit(float e) {
    float u = 1.0f + e, d = u - 1.0f;
    float t = av_logf(u) * (e / (d == 0.0f ? 1.0f : d));
    return d == 0.0f ? e : t;
}

/* log of a positive normal double in double precision (fdlibm's e_log.c reduction and
 * polynomial, within an ulp), branch-free so that loops over it vectorize (libm's log does
 * not): exponent and mantissa from the bits (no int64 to double conversion, so AVX2
 * vectorizes it too), the mantissa in [sqrt(2)/2, sqrt(2)). For the logs of products
 * carried in double (rising factorials, lgamma shifts) without scalar libm calls. */
AV_HD double av_log_d(double x) {
    union {
        double d;
        uint64_t i;
    } u = {.d = x}, v;
    v.i = (u.i >> 52) | 0x4330000000000000ULL; /* 2^52 + biased exponent */
    double e = v.d - (4503599627370496.0 + 1023.0);
    u.i = (u.i & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL; /* mantissa in [1, 2) */
    double m = u.d, mh = 0.5 * m, e1 = e + 1.0;
    int big = m > 1.41421356237309504880;
    m = big ? mh : m, e = big ? e1 : e;
    double f = m - 1.0, s = f / (2.0 + f), z = s * s, w = z * z;
    double t1 = w * (3.999999999940941908e-01 +
                     w * (2.222219843214978396e-01 + w * 1.531383769920937332e-01));
    double t2 = z * (6.666666666666735130e-01 +
                     w * (2.857142874366239149e-01 +
                          w * (1.818357216161805012e-01 + w * 1.479819860511658591e-01)));
    double r = t2 + t1, hfsq = 0.5 * f * f;
    return e * 6.93147180369123816490e-01 -
           ((hfsq - (s * (hfsq + r) + e * 1.90821492927058770002e-10)) - f);
}

/* softplus(x) = log(1 + exp(x)) and sigmoid(x) from one exp, stably */
AV_HD float av_softplus_sigmoid(float x, float *sig) {
    float e = av_expf(-fabsf(x)), inv = 1.0f / (1.0f + e), einv = e * inv;
    *sig = x >= 0.0f ? inv : einv;
    return (x > 0.0f ? x : 0.0f) + av_log1pf_unit(e);
}

/* Per-element log-likelihoods of the count models and their derivatives with respect to
 * the mean mu, the inverse dispersion theta and the zero-inflation logit pi, written as
 * scvi-tools writes them (eps inside the logs). A zero count needs no lgamma: those
 * terms cancel exactly. Per-gene quantities come precomputed: l_t = log(theta + eps),
 * inv_te = 1 / (theta + eps), lg_t = lgamma(theta), dg_t = digamma(theta). */
typedef struct {
    float ll, d_mu, d_theta, d_pi;
} AvLL;

/* log NB(0; mu, theta) = theta (log(theta + eps) - log(theta + mu + eps)) */
AV_HD AvLL av_nb_zero(float mu, float theta, float l_t, float inv_te) {
    float tm = theta + mu + AV_NB_EPS, inv_tm = 1.0f / tm, l_tm = av_logf(tm);
    AvLL r = {theta * (l_t - l_tm), -theta * inv_tm, (l_t - l_tm) + theta * (inv_te - inv_tm), 0};
    return r;
}

/* log(u1 / u2) = 2 atanh(s) for s = (u1 - u2) / (u1 + u2) in [-1/3, 1/3] (u1, u2 in
 * [1, 2]): 2 s (1 + s^2 P(s^2)) with a least-squares P of degree 4, within an ulp (the
 * float evaluation's worst relative error is 6e-8 over the range), and relatively exact
 * for tiny s. No exponent handling and no division: cheaper than a log. */
AV_HD float av_log_ratio_atanh(float s) {
    float t = s * s, p = 1.1619525266e-1f;
    p = p * t + 1.0851657505e-1f;
    p = p * t + 1.4296291707e-1f;
    p = p * t + 1.9999850678e-1f;
    p = p * t + 3.3333333669e-1f;
    float s2 = s + s;
    return s2 + s2 * (t * p);
}

/* The zero-count ZINB terms from nb = log NB(0; mu, theta) and the logit pi, as scvi-tools
 * writes them: returns softplus(nb - pi) - softplus(-pi); *s_a = sigmoid(nb - pi)
 * (d / d nb; d / d pi is s_n - s_a), *s_n = sigmoid(-pi). Two exps, one division, no log:
 * with e1 = exp(-|nb - pi|) and e2 = exp(-|pi|), both in (0, 1], softplus(x) =
 * max(x, 0) + log1p(e), and the two log1p terms are one, log1p(e1) - log1p(e2) =
 * log((1 + e1) / (1 + e2)) = 2 atanh(s) with s = (e1 - e2) / (2 + e1 + e2) in [-1/3, 1/3];
 * the two sigmoids 1 / (1 + e) and s share one reciprocal. Stable for any nb and pi
 * (|pi| up to 100, nb down to -1e4 and beyond: e1, e2 only go to 0). With nb far below
 * -pi (-1e30) it returns -softplus(-pi), the positive counts' term. */
AV_HD float av_zinb_zero_terms(float nb, float pi, float *s_a, float *s_n) {
    float x1 = nb - pi, x2 = -pi;
    float e1 = av_expf_nohi(-fabsf(x1)), e2 = av_expf_nohi(-fabsf(x2));
    float u1 = 1.0f + e1, u2 = 1.0f + e2, w = u1 + u2, u12 = u1 * u2;
    float q = 1.0f / (u12 * w), qw = q * w; /* 1 / ((1 + e1)(1 + e2)(2 + e1 + e2)) */
    float i1 = qw * u2, i2 = qw * u1, ei1 = e1 * i1, ei2 = e2 * i2;
    *s_a = x1 >= 0.0f ? i1 : ei1;
    *s_n = x2 >= 0.0f ? i2 : ei2;
    float m1 = x1 > 0.0f ? x1 : 0.0f, m2 = x2 > 0.0f ? x2 : 0.0f;
    return (m1 - m2) + av_log_ratio_atanh((e1 - e2) * (q * u12));
}

/* zero count: softplus(a) - softplus(-pi) with a = log NB(0) - pi */
AV_HD AvLL av_zinb_zero(float mu, float theta, float l_t, float inv_te, float pi) {
    AvLL nb = av_nb_zero(mu, theta, l_t, inv_te);
    float s_a, s_npi;
    float ll = av_zinb_zero_terms(nb.ll, pi, &s_a, &s_npi);
    AvLL r = {ll, s_a * nb.d_mu, s_a * nb.d_theta, s_npi - s_a};
    return r;
}

AV_HD AvLL av_nb_pos(float x, float mu, float theta, float l_t, float inv_te, float lg_t,
                     float dg_t) {
    AvLL r = av_nb_zero(mu, theta, l_t, inv_te);
    float tm = theta + mu + AV_NB_EPS, inv_tm = 1.0f / tm;
    float lg_xt, dg_xt;
    av_lgamma_digamma(x + theta, &lg_xt, &dg_xt);
    r.ll += x * (av_logf(mu + AV_NB_EPS) - av_logf(tm)) + lg_xt - lg_t - av_lgamma_count(x);
    r.d_mu += x / (mu + AV_NB_EPS) - x * inv_tm;
    r.d_theta += -x * inv_tm + dg_xt - dg_t;
    return r;
}

/* positive count: -softplus(-pi) - pi + log NB(x) */
AV_HD AvLL av_zinb_pos(float x, float mu, float theta, float l_t, float inv_te, float lg_t,
                       float dg_t, float pi) {
    AvLL r = av_nb_pos(x, mu, theta, l_t, inv_te, lg_t, dg_t);
    float s_npi, sp_npi = av_softplus_sigmoid(-pi, &s_npi);
    r.ll += -pi - sp_npi;
    r.d_pi = s_npi - 1.0f; /* = -sigmoid(pi) */
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
