# The compute core: gradient checks of every op and of whole scVI graphs.
av_test(test_grad test_grad.c av_core)
# src/mathx.h's exp on NaN, infinities and its whole range (UB-free: the sanitizer build).
av_test(test_mathx test_mathx.c av_core)
# The core's former size limits (arena blocks, gradient planning, loss terms, RNG keys):
# one program, one CTest test per limit.
add_executable(test_core_limits test_core_limits.c)
target_link_libraries(test_core_limits PRIVATE av_core)
foreach(limit arena loss_terms grad_plan rng_streams)
  add_test(NAME core_limits_${limit} COMMAND test_core_limits ${limit})
  set_tests_properties(core_limits_${limit} PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=2")
endforeach()
