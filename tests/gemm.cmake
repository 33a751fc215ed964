# av_sgemm (src/gemm.c) against a double-precision reference and cblas_sgemm: every
# transpose, beta 0 / 1 / 0.5, odd sizes, padded leading dimensions, 1 and 2 threads, on
# every CPU path this machine runs (AVX-512, AVX2, generic C), and the FMA paths bitwise
# equal to each other.
av_test(test_gemm test_gemm.c av_core)
