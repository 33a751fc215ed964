# The CUDA kernels against the CPU maths they share; skips where no GPU is present.
if(TARGET atlasvi_cuda)
  av_test(test_cuda test_cuda.c atlasvi_cuda)
endif()
