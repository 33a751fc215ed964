/* CUDA kernels of the count likelihood, thin over the same static inline maths the CPU
 * kernels use (src/mathx.h): the GPU runs arithmetic the CPU tests check. */
#include "src/cuda/cuda_ops.h"
#include "src/mathx.h"

/* Every gene of every cell as a zero count (the dense part of the ZINB/NB likelihood):
 * per element the log-likelihood and d/dmu, theta * d/dtheta, d/dpi. theta tables are
 * per gene (one row of [code][gene] picked per cell). */
__global__ static void zero_pass(int n, int G, const float *rho, const float *log_lib,
                                 const float *theta, const float *log_theta, const float *inv_theta,
                                 const int *code, const float *pi, float *ll, float *d_mu,
                                 float *d_theta, float *d_pi) {
    long e = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (long)n * G) return;
    int i = (int)(e / G), j = (int)(e % G);
    long t = (long)(code ? code[i] : 0) * G + j;
    float mu = expf(log_lib[i]) * rho[e];
    AvLL q = pi ? av_zinb_zero(mu, theta[t], log_theta[t], inv_theta[t], pi[e])
                : av_nb_zero(mu, theta[t], log_theta[t], inv_theta[t]);
    ll[e] = q.ll;
    d_mu[e] = q.d_mu;
    d_theta[e] = theta[t] * q.d_theta;
    d_pi[e] = q.d_pi;
}

extern "C" int av_cuda_available(void) {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

/* Host wrapper on device pointers; returns 0 or the CUDA error code. */
extern "C" int av_cuda_count_zero_pass(int n, int G, const float *rho, const float *log_lib,
                                       const float *theta, const float *log_theta,
                                       const float *inv_theta, const int *code, const float *pi,
                                       float *ll, float *d_mu, float *d_theta, float *d_pi) {
    long total = (long)n * G;
    if (total == 0) return 0;
    int threads = 256;
    long blocks = (total + threads - 1) / threads;
    zero_pass<<<(unsigned)blocks, threads>>>(n, G, rho, log_lib, theta, log_theta, inv_theta, code,
                                             pi, ll, d_mu, d_theta, d_pi);
    return (int)cudaGetLastError();
}
