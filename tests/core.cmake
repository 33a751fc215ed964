# The compute core: gradient checks of every op and of whole scVI graphs.
av_test(test_grad test_grad.c av_core)
