# The CPU paths below this machine's best (src/isa.h): the default run of every test takes
# the best path; these run the goldens, the gradient checks, training quality and the
# rank-invariance tests (N-rank gradients, full-batch training on 1/2/3 ranks, DE tables
# and posterior on 1/2/3 ranks) again with ATLASVI_ISA forcing each lower path, so that CI
# on an AVX-512 machine also covers AVX2 and generic C. (test_gemm and test_sparse_linear
# run every path themselves.) Named zz_ so that it is included after the areas it repeats.
set(av_lower_paths "")
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64" AND EXISTS /proc/cpuinfo)
  file(READ /proc/cpuinfo av_cpuinfo)
  if(av_cpuinfo MATCHES "[ \t]avx512f[ \n]" AND av_cpuinfo MATCHES "[ \t]avx512vl[ \n]")
    list(APPEND av_lower_paths avx2)
  endif()
  if(av_cpuinfo MATCHES "[ \t]avx2[ \n]")
    list(APPEND av_lower_paths generic)
  endif()
endif()
message(STATUS "atlasvi: tests also run on the CPU paths: ${av_lower_paths}")

set(av_path_env "OMP_NUM_THREADS=2;OPENBLAS_NUM_THREADS=1;AV_DATA=${AV_DATA};AV_SRC=${CMAKE_SOURCE_DIR}")
foreach(p ${av_lower_paths})
  add_test(NAME test_golden_${p} COMMAND test_golden ${CMAKE_SOURCE_DIR}/tests/golden)
  add_test(NAME test_grad_${p} COMMAND test_grad)
  add_test(NAME test_quality_${p} COMMAND test_quality ${AV_DATA} 150)
  set_tests_properties(test_golden_${p} test_grad_${p} test_quality_${p} PROPERTIES
    SKIP_RETURN_CODE 77 TIMEOUT 900 ENVIRONMENT "ATLASVI_ISA=${p};${av_path_env}")

  foreach(n 1 2 4)
    add_test(NAME test_dist_equiv_grad_np${n}_${p}
      COMMAND ${AV_MPIEXEC} -n ${n} $<TARGET_FILE:test_dist_equiv> grad)
    set_tests_properties(test_dist_equiv_grad_np${n}_${p} PROPERTIES SKIP_RETURN_CODE 77
      TIMEOUT 60 PROCESSORS ${n} ENVIRONMENT "ATLASVI_ISA=${p};${AV_DEQ_ENV}")
  endforeach()
  foreach(n 1 2 3)
    add_test(NAME test_dist_equiv_trainfull_np${n}_${p}
      COMMAND ${AV_MPIEXEC} -n ${n} $<TARGET_FILE:test_dist_equiv> train
              ${AV_DEQ_DIR}/full_np${n}_${p}.txt full)
    set_tests_properties(test_dist_equiv_trainfull_np${n}_${p} PROPERTIES SKIP_RETURN_CODE 77
      TIMEOUT 60 PROCESSORS ${n} ENVIRONMENT "ATLASVI_ISA=${p};${AV_DEQ_ENV}"
      FIXTURES_SETUP dist_equiv_full_${p})
  endforeach()
  foreach(n 2 3)
    add_test(NAME test_dist_equiv_trainfull_compare_np${n}_${p}
      COMMAND test_dist_equiv compare_exact ${AV_DEQ_DIR}/full_np1_${p}.txt
              ${AV_DEQ_DIR}/full_np${n}_${p}.txt 1e-5)
    set_tests_properties(test_dist_equiv_trainfull_compare_np${n}_${p} PROPERTIES TIMEOUT 30
      FIXTURES_REQUIRED dist_equiv_full_${p})
  endforeach()

  add_test(NAME de_cli_${p} COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/de_cli.sh)
  set_tests_properties(de_cli_${p} PROPERTIES TIMEOUT 600 ENVIRONMENT
    "ATLASVI_ISA=${p};AV_BIN=$<TARGET_FILE:atlasvi>;AV_MPIEXEC=${AV_DE_MPIEXEC};AV_PY=/usr/bin/python3;AV_SRC=${CMAKE_SOURCE_DIR};WORK=${CMAKE_CURRENT_BINARY_DIR}/de_cli_${p};OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1;OMP_WAIT_POLICY=passive")
endforeach()
