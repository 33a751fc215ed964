/* Single-precision GEMM for the model's thin shapes (batch x hidden x genes).
 *
 * av_sgemm: row-major C = op(A) op(B) + beta C, op(X) = X or X^T (ta, tb), alpha = 1.
 *   op(A) is m x k (stored m x k with ta = 0, k x m with ta = 1, leading dimension lda),
 *   op(B) is k x n (stored k x n with tb = 0, n x k with tb = 1, leading dimension ldb),
 *   C is m x n with leading dimension ldc. beta == 0 never reads C (it may hold NaN).
 * Called outside a parallel region it runs on the OpenMP team (omp_get_max_threads()
 * threads, columns of C split across them, never k); inside one it runs serially on the
 * calling thread. Each element of C is one fixed sequence of FMAs over k, so results do
 * not depend on the number of threads. Kernels for AVX-512, AVX2 + FMA and generic C, the
 * path av_isa() says (src/isa.h); the FMA paths give bitwise the same C. */
#ifndef AV_GEMM_H
#define AV_GEMM_H

#include <stdint.h>

void av_sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
              const float *b, int64_t ldb, float beta, float *c, int64_t ldc);

/* C = op(A) op(B) + bias: bias (n floats, NULL for none) added to every row of C in the
 * kernels' store (C is not read), bitwise what filling C's rows with bias and then
 * av_sgemm with beta = 1 gives, with one pass over C instead of three. */
void av_sgemm_bias(int ta, int tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                   const float *b, int64_t ldb, const float *bias, float *c, int64_t ldc);

#endif
