# scVI against scvi-tools 1.4.2 itself: tests/golden/scvi_<case>.h5 (see its README.md).
# Losses, gradients, BatchNorm statistics, eval outputs and 10 Adam steps for every case.
av_test(test_golden test_golden.c "av_core;av_io" ${CMAKE_SOURCE_DIR}/tests/golden)
# The test reads the fixtures with HDF5 itself; parallel HDF5 headers include mpi.h.
target_include_directories(test_golden PRIVATE ${HDF5_INCLUDE_DIRS})
target_compile_definitions(test_golden PRIVATE ${HDF5_DEFINITIONS})
target_link_libraries(test_golden PRIVATE ${HDF5_C_LIBRARIES} MPI::MPI_C)

# scANVI's classifier ops (cross-entropy, categorical KL) against scvi-tools 1.5.1:
# tests/golden/scanvi_<case>.h5 (tests/golden/README_scanvi.md).
av_test(test_scanvi_ops test_scanvi_ops.c av_core ${CMAKE_SOURCE_DIR}/tests/golden)
target_include_directories(test_scanvi_ops PRIVATE ${HDF5_INCLUDE_DIRS})
target_compile_definitions(test_scanvi_ops PRIVATE ${HDF5_DEFINITIONS})
target_link_libraries(test_scanvi_ops PRIVATE ${HDF5_C_LIBRARIES} MPI::MPI_C)
