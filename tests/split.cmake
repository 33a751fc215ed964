# The validation split: exact sizes (scvi-tools' rule) on 1 and 3 ranks.
add_test(NAME split_sizes_np1 COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/split_check.sh
  $<TARGET_FILE:atlasvi> ${AV_DATA} ${CMAKE_CURRENT_BINARY_DIR}/split1)
add_test(NAME split_sizes_np3 COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/split_check.sh
  $<TARGET_FILE:atlasvi> ${AV_DATA} ${CMAKE_CURRENT_BINARY_DIR}/split3 ${AV_MPIEXEC} -n 3)
set_tests_properties(split_sizes_np1 split_sizes_np3 PROPERTIES TIMEOUT 120 SKIP_RETURN_CODE 77
  ENVIRONMENT "OMP_NUM_THREADS=1")
