# av_sgemm (src/gemm.c) against a double-precision reference and cblas_sgemm: every
# transpose, beta 0 / 1 / 0.5, odd sizes, padded leading dimensions, 1 and 2 threads;
# test_gemm_blas runs the same checks on its cblas_sgemm fallback (AV_SGEMM=blas).
av_test(test_gemm test_gemm.c av_core)
add_test(NAME test_gemm_blas COMMAND test_gemm)
set_tests_properties(test_gemm_blas PROPERTIES ENVIRONMENT
  "AV_SGEMM=blas;OMP_NUM_THREADS=2;OPENBLAS_NUM_THREADS=1")
