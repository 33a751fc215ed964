# The sparse first layer of the encoders (src/ops_sparse.c) against a double-precision
# reference, on 1 to 3 threads, on every CPU path the machine has (src/isa.h).
# AV_SPARSE_BENCH=1 (or a number of repetitions) ./test_sparse_linear times it instead.
av_test(test_sparse_linear test_sparse_linear.c av_core)
