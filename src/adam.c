/* No FP traps are used (see ops.c); before the includes, as there. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include "src/adam.h"

#include <math.h>
#include <omp.h>

#include "src/isa.h"
#include "src/mathx.h"

/* sqrt(x) for finite x >= 0 without libm: sqrtf keeps the loop scalar because of its
 * errno path (and #pragma GCC optimize cannot switch -fmath-errno off). Bit-trick
 * reciprocal square root, three Newton steps, then one Newton step on the root itself:
 * within 1 ulp of sqrtf, far below what Adam's eps = 0.01 lets matter. */
static inline float sqrt_nonneg(float x) {
    union {
        float f;
        int32_t i;
    } u = {.f = x};
    u.i = 0x5f375a86 - (u.i >> 1);
    float y = u.f, hx = 0.5f * x;
    y = y * (1.5f - hx * y * y);
    y = y * (1.5f - hx * y * y);
    y = y * (1.5f - hx * y * y);
    float s = x * y;                   /* ~ sqrt(x), relative error ~1e-7 */
    return s + 0.5f * y * (x - s * s); /* 0 stays 0 */
}

AV_ISA_BODY void adam_range_body(float *restrict params, const float *restrict grads,
                                 float *restrict m, float *restrict v, int64_t n, float b1,
                                 float b2, float wd, float eps, float step_size,
                                 float inv_sqrt_bc2) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float g = grads[i] + wd * params[i];
        float mi = b1 * m[i] + (1.0f - b1) * g;
        float vi = b2 * v[i] + (1.0f - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        params[i] -= step_size * mi / (sqrt_nonneg(vi) * inv_sqrt_bc2 + eps);
    }
}
AV_DISPATCH_VOID(adam_range,
                 (float *restrict params, const float *restrict grads, float *restrict m,
                  float *restrict v, int64_t n, float b1, float b2, float wd, float eps,
                  float step_size, float inv_sqrt_bc2),
                 (params, grads, m, v, n, b1, b2, wd, eps, step_size, inv_sqrt_bc2))

AvAdam av_adam_defaults(void) {
    AvAdam a = {1e-3f, 0.9f, 0.999f, 0.01f, 1e-6f, 0};
    return a;
}

void av_adam_update(const AvAdam *a, float *params, const float *grads, float *m, float *v,
                    int64_t n) {
    /* torch: denom = sqrt(v) / sqrt(1 - b2^t) + eps; p -= lr / (1 - b1^t) * m / denom */
    double bc1 = 1.0 - pow(a->beta1, (double)a->step);
    double bc2 = 1.0 - pow(a->beta2, (double)a->step);
    float step_size = (float)(a->lr / bc1), inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
    float b1 = a->beta1, b2 = a->beta2, wd = a->weight_decay, eps = a->eps;
    if (n < 16384) { /* small tensors: a parallel region costs more than the update */
        adam_range(params, grads, m, v, n, b1, b2, wd, eps, step_size, inv_sqrt_bc2);
        return;
    }
#pragma omp parallel
    {
        int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
        int64_t lo = (n * t / nt) & ~(int64_t)15,
                hi = t == nt - 1 ? n : (n * (t + 1) / nt) & ~(int64_t)15;
        adam_range(params + lo, grads + lo, m + lo, v + lo, hi - lo, b1, b2, wd, eps, step_size,
                   inv_sqrt_bc2);
    }
}
