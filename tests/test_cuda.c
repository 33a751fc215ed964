/* The CUDA zero-count kernel against the CPU maths it shares (src/mathx.h). Skips, and
 * says why, where no GPU is present; the arithmetic itself is covered by test_grad and
 * test_golden on the CPU. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "src/cuda/cuda_ops.h"
#include "src/mathx.h"
#include "src/rng.h"

float av_lgamma_factorial_table[AV_LGF_TABLE];
void av_lgamma_table_init(void) {}

int main(void) {
    if (!av_cuda_available()) {
        printf(
            "SKIP: no CUDA device here (the kernel is compiled; its maths is tested on the CPU)\n");
        return 77;
    }
    enum { N = 64, G = 500 };
    static float rho[N * G], lib[N], th[G], lt[G], ite[G], pi[N * G];
    static float ll[N * G], dm[N * G], dt[N * G], dp[N * G];
    AvRngSeq r;
    av_seq_init(&r, 3, 9, 0);
    for (int j = 0; j < G; j++) {
        th[j] = (float)exp(av_seq_normal(&r));
        lt[j] = logf(th[j] + AV_NB_EPS);
        ite[j] = 1.0f / (th[j] + AV_NB_EPS);
    }
    for (int i = 0; i < N; i++) {
        lib[i] = (float)(6 + av_seq_uniform(&r));
        double s = 0;
        for (int j = 0; j < G; j++) s += rho[i * G + j] = (float)av_seq_uniform(&r);
        for (int j = 0; j < G; j++)
            rho[i * G + j] /= (float)s, pi[i * G + j] = (float)av_seq_normal(&r);
    }
    float *d[10];
    const float *host[6] = {rho, lib, th, lt, ite, pi};
    size_t sz[10] = {N * G, N, G, G, G, N * G, N * G, N * G, N * G, N * G};
    for (int k = 0; k < 10; k++) {
        if (cudaMalloc((void **)&d[k], sz[k] * sizeof(float)) != cudaSuccess) return 1;
        if (k < 6) cudaMemcpy(d[k], host[k], sz[k] * sizeof(float), cudaMemcpyHostToDevice);
    }
    int rc = av_cuda_count_zero_pass(N, G, d[0], d[1], d[2], d[3], d[4], NULL, d[5], d[6], d[7],
                                     d[8], d[9]);
    float *out[4] = {ll, dm, dt, dp};
    for (int k = 0; k < 4; k++)
        cudaMemcpy(out[k], d[6 + k], sizeof(float) * N * G, cudaMemcpyDeviceToHost);
    double worst = 0;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < G; j++) {
            int e = i * G + j;
            AvLL q = av_zinb_zero(expf(lib[i]) * rho[e], th[j], lt[j], ite[j], pi[e]);
            float ref[4] = {q.ll, q.d_mu, th[j] * q.d_theta, q.d_pi};
            for (int k = 0; k < 4; k++) {
                double err = fabs(out[k][e] - ref[k]) / (fabs(ref[k]) + 1e-3);
                if (err > worst) worst = err;
            }
        }
    printf("CUDA zero pass vs CPU: worst relative difference %.2e (kernel rc %d)\n", worst, rc);
    return rc == 0 && worst < 1e-4 ? 0 : 1;
}
