# scvi-tools model files both ways (atlasvi export / import): pickle round trip, the
# committed scvi-tools 1.4.2 model directory imported and its latent compared with
# scvi-tools' (1e-4), import -> export -> import identity, and refusals. The model
# directory is made by hand with tests/golden/make_scvi_model_dir.py.
av_test(test_export_import test_export_import.c "av_io"
  $<TARGET_FILE:atlasvi> ${CMAKE_SOURCE_DIR}/tests/golden/scvi_model_dir
  ${AV_DATA}/heart_hca_fibro_endo_320x136.h5ad ${CMAKE_CURRENT_BINARY_DIR}/export_import)
target_include_directories(test_export_import PRIVATE ${HDF5_INCLUDE_DIRS})
target_compile_definitions(test_export_import PRIVATE ${HDF5_DEFINITIONS})
target_link_libraries(test_export_import PRIVATE ${HDF5_C_LIBRARIES} MPI::MPI_C)
add_dependencies(test_export_import atlasvi)
set_tests_properties(test_export_import PROPERTIES TIMEOUT 120)
