/* The CUDA backend's entry points (C linkage). Built only when nvcc is found; the CPU
 * build never needs it. */
#ifndef AV_CUDA_OPS_H
#define AV_CUDA_OPS_H

#ifdef __cplusplus
extern "C" {
#endif

int av_cuda_available(void);
/* ZINB (pi != NULL) or NB zero-count terms of n cells x G genes, device pointers. */
int av_cuda_count_zero_pass(int n, int G, const float *rho, const float *log_lib,
                            const float *theta, const float *log_theta, const float *inv_theta,
                            const int *code, const float *pi, float *ll, float *d_mu,
                            float *d_theta, float *d_pi);

#ifdef __cplusplus
}
#endif
#endif
