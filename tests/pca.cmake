# atlasvi pca: ScaLAPACK eigensolver and the distributed PCA vs serial LAPACK (dsyev) with
# 1, 2 and 4 ranks, and the command end to end (with an hvg mask from atlasvi hvg).
add_executable(test_pca test_pca.c)
target_link_libraries(test_pca PRIVATE av_app)
set(AV_PCA_ENV "AV_DATA=${AV_DATA};AV_SRC=${CMAKE_SOURCE_DIR};OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
foreach(n 1 2 4)
  add_test(NAME test_pca_np${n} COMMAND ${AV_MPIEXEC} -n ${n} $<TARGET_FILE:test_pca>)
  set_tests_properties(test_pca_np${n} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300
    PROCESSORS ${n} ENVIRONMENT "${AV_PCA_ENV}")
endforeach()

# The command: hvg, then pca on the hvg genes with 1 and 2 ranks; the two X_pca agree up to
# column signs (compared by the C helper below), and a bad --hvg-from is reported.
add_executable(pca_compare_obsm pca_compare_obsm.c)
target_include_directories(pca_compare_obsm PRIVATE ${HDF5_INCLUDE_DIRS})
target_compile_definitions(pca_compare_obsm PRIVATE ${HDF5_DEFINITIONS})
target_link_libraries(pca_compare_obsm PRIVATE ${HDF5_C_LIBRARIES} MPI::MPI_C m)
set(AV_PCA_CLI ${CMAKE_CURRENT_BINARY_DIR}/pca_cli.cmake)
file(WRITE ${AV_PCA_CLI} [=[
set(in ${DATA}/real_pbmc_kang18_ctrl_12261x1287.h5ad)
if(NOT EXISTS ${in})
  message("shared data missing: skipped")
  return()
endif()
file(REMOVE ${OUT}/pca_hvg.h5ad ${OUT}/pca_1.h5ad ${OUT}/pca_2.h5ad)
execute_process(COMMAND ${EXE} hvg ${in} --n-top-genes 400 --output ${OUT}/pca_hvg.h5ad
  RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "atlasvi hvg failed: ${err}")
endif()
execute_process(COMMAND ${EXE} pca ${in} --n-comps 10 --hvg-from ${OUT}/pca_hvg.h5ad
  --output ${OUT}/pca_1.h5ad RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT err MATCHES "10 components of 400 genes")
  message(FATAL_ERROR "atlasvi pca (1 rank) failed: ${err}")
endif()
execute_process(COMMAND ${MPIEXEC} -n 2 ${EXE} pca ${in} --n-comps 10 --hvg-from
  ${OUT}/pca_hvg.h5ad --output ${OUT}/pca_2.h5ad RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "atlasvi pca (2 ranks) failed: ${err}")
endif()
execute_process(COMMAND ${CMP} ${OUT}/pca_1.h5ad ${OUT}/pca_2.h5ad X_pca RESULT_VARIABLE rc
  OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "X_pca of 1 and 2 ranks differ: ${out} ${err}")
endif()
execute_process(COMMAND ${EXE} pca ${in} --hvg-from ${DATA}/real_pbmc_kang18_ctrlstim_1556x1267.h5ad
  --output ${OUT}/pca_bad.h5ad RESULT_VARIABLE rc ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "hvg-from" OR EXISTS ${OUT}/pca_bad.h5ad)
  message(FATAL_ERROR "mismatched --hvg-from not reported: ${err}")
endif()
]=])
add_test(NAME test_pca_cli COMMAND ${CMAKE_COMMAND} -DEXE=$<TARGET_FILE:atlasvi>
  -DCMP=$<TARGET_FILE:pca_compare_obsm> "-DMPIEXEC=${AV_MPIEXEC}" -DDATA=${AV_DATA}
  -DOUT=${CMAKE_CURRENT_BINARY_DIR} -P ${AV_PCA_CLI})
set_tests_properties(test_pca_cli PROPERTIES TIMEOUT 300 ENVIRONMENT "${AV_PCA_ENV}")
