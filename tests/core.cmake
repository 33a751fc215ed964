# The compute core: gradient checks of every op and of whole scVI graphs.
av_test(test_grad test_grad.c av_core)
# src/mathx.h's exp on NaN, infinities and its whole range (UB-free: the sanitizer build).
av_test(test_mathx test_mathx.c av_core)
