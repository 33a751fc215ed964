# Writers (io/output.c), the model file (io/blob.c) and `atlasvi simulate`.
# The C tests open the written files with HDF5 directly to check their structure.
set(AV_OUT_FILES ${CMAKE_CURRENT_BINARY_DIR}/output_files)

function(av_output_test name src)
  av_test(${name} ${src} "av_core;av_io" ${ARGN})
  target_include_directories(${name} PRIVATE ${HDF5_INCLUDE_DIRS})
  target_compile_definitions(${name} PRIVATE ${HDF5_DEFINITIONS})
  target_link_libraries(${name} PRIVATE ${HDF5_C_LIBRARIES} MPI::MPI_C)
endfunction()

av_output_test(test_output test_output.c ${AV_OUT_FILES})
av_output_test(test_blob test_blob.c ${CMAKE_CURRENT_BINARY_DIR}/blob_files)
set_tests_properties(test_output PROPERTIES FIXTURES_SETUP av_output_files)

# anndata.read_h5ad on the files test_output left (skipped without Debian's anndata).
set(AV_PY /usr/bin/python3)
add_test(NAME test_output_anndata
  COMMAND sh -c "if [ -x ${AV_PY} ]; then exec ${AV_PY} ${CMAKE_CURRENT_SOURCE_DIR}/check_h5ad.py output ${AV_OUT_FILES}; else echo 'skipped: no ${AV_PY}'; exit 77; fi")
set_tests_properties(test_output_anndata PROPERTIES SKIP_RETURN_CODE 77
  FIXTURES_REQUIRED av_output_files)

# The simulator in memory and streamed, and `atlasvi simulate` end to end.
set(AV_SIM_FILES ${CMAKE_CURRENT_BINARY_DIR}/simulate_files)
av_output_test(test_simulate test_simulate.c $<TARGET_FILE:atlasvi> ${AV_SIM_FILES})
add_dependencies(test_simulate atlasvi)
set_tests_properties(test_simulate PROPERTIES FIXTURES_SETUP av_simulate_files)
add_test(NAME test_simulate_anndata
  COMMAND sh -c "if [ -x ${AV_PY} ]; then exec ${AV_PY} ${CMAKE_CURRENT_SOURCE_DIR}/check_h5ad.py simulate ${AV_SIM_FILES}/cli_a.h5ad 5000 800 4 10; else echo 'skipped: no ${AV_PY}'; exit 77; fi")
set_tests_properties(test_simulate_anndata PROPERTIES SKIP_RETURN_CODE 77
  FIXTURES_REQUIRED av_simulate_files)
