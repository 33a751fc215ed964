# atlasvi hvg: seurat_v3 highly variable genes vs scanpy (tests/hvg_expected, made by
# tests/make_hvg_expected.py), with 1 and 3 ranks, and the command end to end.
add_executable(test_hvg test_hvg.c)
target_link_libraries(test_hvg PRIVATE av_app)
set(AV_HVG_ENV "AV_DATA=${AV_DATA};AV_SRC=${CMAKE_SOURCE_DIR};OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
foreach(n 1 3)
  add_test(NAME test_hvg_np${n} COMMAND ${AV_MPIEXEC} -n ${n} $<TARGET_FILE:test_hvg>)
  set_tests_properties(test_hvg_np${n} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300
    PROCESSORS ${n} ENVIRONMENT "${AV_HVG_ENV}")
endforeach()

# The command: --output and --subset on the Kang file with 2 ranks, then the outputs are
# read back with `atlasvi info` (shape of the subset, var columns present).
set(AV_HVG_CLI ${CMAKE_CURRENT_BINARY_DIR}/hvg_cli.cmake)
file(WRITE ${AV_HVG_CLI} [=[
set(in ${DATA}/real_pbmc_kang18_ctrl_12261x1287.h5ad)
if(NOT EXISTS ${in})
  message("shared data missing: skipped")
  return()
endif()
file(REMOVE ${OUT}/hvg_full.h5ad ${OUT}/hvg_sub.h5ad)
execute_process(COMMAND ${MPIEXEC} -n 2 ${EXE} hvg ${in} --batch-key sample_id --n-top-genes 300
  --output ${OUT}/hvg_full.h5ad --subset ${OUT}/hvg_sub.h5ad RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "atlasvi hvg failed: ${err}")
endif()
execute_process(COMMAND ${EXE} info ${OUT}/hvg_sub.h5ad OUTPUT_VARIABLE info RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR NOT info MATCHES "12261" OR NOT info MATCHES "300")
  message(FATAL_ERROR "subset file is not 12261 x 300: ${info}")
endif()
execute_process(COMMAND ${EXE} info ${OUT}/hvg_full.h5ad OUTPUT_VARIABLE info RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "atlasvi info cannot read the hvg output")
endif()
execute_process(COMMAND ${EXE} hvg ${in} --n-top-genes 300 --batch-key no_such_key
  --output ${OUT}/hvg_bad.h5ad RESULT_VARIABLE rc ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "no_such_key" OR EXISTS ${OUT}/hvg_bad.h5ad)
  message(FATAL_ERROR "unknown batch key not reported: ${err}")
endif()
]=])
string(REPLACE ";" "|" AV_HVG_MPI "${AV_MPIEXEC}")
add_test(NAME test_hvg_cli COMMAND ${CMAKE_COMMAND} -DEXE=$<TARGET_FILE:atlasvi>
  "-DMPIEXEC=${AV_MPIEXEC}" -DDATA=${AV_DATA} -DOUT=${CMAKE_CURRENT_BINARY_DIR}
  -P ${AV_HVG_CLI})
set_tests_properties(test_hvg_cli PROPERTIES TIMEOUT 300 ENVIRONMENT "${AV_HVG_ENV}")
