#include "src/adam.h"

#include <math.h>

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
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float g = grads[i] + wd * params[i];
        m[i] = b1 * m[i] + (1.0f - b1) * g;
        v[i] = b2 * v[i] + (1.0f - b2) * g * g;
        params[i] -= step_size * m[i] / (sqrtf(v[i]) * inv_sqrt_bc2 + eps);
    }
}
