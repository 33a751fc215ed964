/* Adam as torch.optim.Adam with scvi-tools' settings: lr 1e-3, betas (0.9, 0.999),
 * eps 0.01, weight decay 1e-6 coupled (added to the gradient, L2), bias correction. */
#ifndef AV_ADAM_H
#define AV_ADAM_H
#include <stdint.h>

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    int64_t step; /* number of updates done so far */
} AvAdam;

AvAdam av_adam_defaults(void);
/* One update of params[0..n) from grads; m and v are the moment buffers. The caller
 * passes only parameters that received a gradient (PyTorch skips the others, weight
 * decay included) and increments a->step once per optimiser step before calling. */
void av_adam_update(const AvAdam *a, float *params, const float *grads, float *m, float *v,
                    int64_t n);

#endif
