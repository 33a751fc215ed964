/* Counter-based random numbers (Philox4x32-10, Salmon et al. 2011). A draw is a pure
 * function of (seed, counter), so a cell's noise depends on its global index and the
 * step, not on which rank holds it; CPU and GPU code include the same functions. */
#ifndef AV_RNG_H
#define AV_RNG_H
#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define AV_HD __host__ __device__ static inline
#else
#define AV_HD static inline
#endif

typedef struct {
    uint32_t v[4];
} AvRng4;

AV_HD uint32_t av_mulhilo(uint32_t a, uint32_t b, uint32_t *hi) {
    uint64_t p = (uint64_t)a * (uint64_t)b;
    *hi = (uint32_t)(p >> 32);
    return (uint32_t)p;
}

/* Four 32-bit words from counter (c0..c3) under the 64-bit key. */
AV_HD AvRng4 av_philox(uint64_t key, uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3) {
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    uint32_t x0 = c0, x1 = c1, x2 = c2, x3 = c3;
    for (int r = 0; r < 10; r++) {
        uint32_t hi0, hi1;
        uint32_t lo0 = av_mulhilo(0xD2511F53u, x0, &hi0);
        uint32_t lo1 = av_mulhilo(0xCD9E8D57u, x2, &hi1);
        uint32_t n0 = hi1 ^ x1 ^ k0, n2 = hi0 ^ x3 ^ k1;
        x0 = n0;
        x1 = lo1;
        x2 = n2;
        x3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    AvRng4 o = {{x0, x1, x2, x3}};
    return o;
}

/* Uniform in (0, 1): never 0 or 1, safe for log. */
AV_HD float av_u01(uint32_t x) {
    return ((float)(x >> 8) + 0.5f) * (1.0f / 16777216.0f);
}
AV_HD double av_u01d(uint32_t x) {
    return ((double)x + 0.5) * (1.0 / 4294967296.0);
}

/* Named streams keep independent uses of the generator apart. */
enum {
    AV_STREAM_SPLIT = 1,   /* train/validation split */
    AV_STREAM_SHUFFLE = 2, /* epoch permutation */
    AV_STREAM_NOISE = 3,   /* reparameterisation, dropout (op index added) */
    AV_STREAM_INIT = 4,    /* weight initialisation */
    AV_STREAM_SIM = 5,     /* simulator */
    AV_STREAM_SAMPLE = 6   /* posterior sampling for outputs */
};

/* A sequential generator on top of Philox for host code that needs many draws
 * (initialisation, simulation): (seed, stream, id) picks an independent sequence. */
typedef struct {
    uint64_t key;
    uint32_t stream, id_lo, id_hi, ctr;
    AvRng4 buf;
    int left;
} AvRngSeq;

static inline void av_seq_init(AvRngSeq *s, uint64_t seed, uint32_t stream, uint64_t id) {
    s->key = seed;
    s->stream = stream;
    s->id_lo = (uint32_t)id;
    s->id_hi = (uint32_t)(id >> 32);
    s->ctr = 0;
    s->left = 0;
}
static inline uint32_t av_seq_u32(AvRngSeq *s) {
    if (s->left == 0) {
        s->buf = av_philox(s->key, s->ctr++, s->stream, s->id_lo, s->id_hi);
        s->left = 4;
    }
    return s->buf.v[--s->left];
}
static inline double av_seq_uniform(AvRngSeq *s) {
    return av_u01d(av_seq_u32(s));
}
static inline double av_seq_normal(AvRngSeq *s) {
    double u1 = av_seq_uniform(s), u2 = av_seq_uniform(s);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
/* Gamma(shape, 1) by Marsaglia-Tsang (shape < 1 boosted). */
static inline double av_seq_gamma(AvRngSeq *s, double shape) {
    if (shape < 1.0) {
        double u = av_seq_uniform(s);
        return av_seq_gamma(s, shape + 1.0) * pow(u, 1.0 / shape);
    }
    double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = av_seq_normal(s), v = 1.0 + c * x;
        if (v <= 0) continue;
        v = v * v * v;
        double u = av_seq_uniform(s);
        if (log(u) < 0.5 * x * x + d - d * v + d * log(v)) return d * v;
    }
}
/* Poisson(lambda): inversion for small lambda, normal-approximated transformed
 * rejection (PTRS, Hormann 1993) for large. */
static inline int64_t av_seq_poisson(AvRngSeq *s, double lam) {
    if (lam <= 0) return 0;
    if (lam < 10.0) {
        double L = exp(-lam), p = 1.0;
        int64_t k = 0;
        do {
            k++;
            p *= av_seq_uniform(s);
        } while (p > L);
        return k - 1;
    }
    double slam = sqrt(lam), loglam = log(lam);
    double b = 0.931 + 2.53 * slam, a = -0.059 + 0.02483 * b,
           invalpha = 1.1239 + 1.1328 / (b - 3.4);
    double vr = 0.9277 - 3.6224 / (b - 2);
    for (;;) {
        double U = av_seq_uniform(s) - 0.5, V = av_seq_uniform(s);
        double us = 0.5 - fabs(U);
        int64_t k = (int64_t)floor((2 * a / us + b) * U + lam + 0.43);
        if (us >= 0.07 && V <= vr) return k;
        if (k < 0 || (us < 0.013 && V > us)) continue;
        if (log(V) + log(invalpha) - log(a / (us * us) + b) <= -lam + k * loglam - lgamma(k + 1.0))
            return k;
    }
}

#endif
