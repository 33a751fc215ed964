# io/ readers: every shared data file against values established with h5py/scipy
# (tests/make_io_expected.py -> tests/io_expected/expected.txt), synthetic fixtures
# generated at test time (LZF, gzip, CSC, legacy 0.7, 10x v2, Matrix Market), bad inputs.
av_test(test_io_files test_io_files.c "av_io" ${CMAKE_SOURCE_DIR}/tests/io_expected/expected.txt)
av_test(test_io_fixtures test_io_files.c "av_io" --fixtures ${CMAKE_CURRENT_BINARY_DIR}/io_fixtures)
av_test(test_io_bad test_io_bad.c "av_io" ${CMAKE_CURRENT_BINARY_DIR}/io_bad)
set_tests_properties(test_io_bad PROPERTIES ENVIRONMENT
  "AV_DATA=${AV_DATA};AV_SRC=${CMAKE_SOURCE_DIR};AV_BIN=$<TARGET_FILE:atlasvi>")
# Parallel inflation of gzip chunks (io/h5util.c h5u_read_slab_inflate) against HDF5's read.
av_test(test_read_inflate test_read_inflate.c "av_io" ${CMAKE_CURRENT_BINARY_DIR}/read_inflate.h5)
target_include_directories(test_read_inflate PRIVATE ${HDF5_INCLUDE_DIRS})
target_compile_definitions(test_read_inflate PRIVATE ${HDF5_DEFINITIONS})
target_link_libraries(test_read_inflate PRIVATE ${HDF5_C_LIBRARIES} MPI::MPI_C OpenMP::OpenMP_C)
# Hostile inputs: Matrix Market size lines that overflow or claim more than the files
# hold, dataframe indexes in every string encoding of today's anndata (fixtures written
# with HDF5's C API at test time).
av_test(test_io_hostile test_io_hostile.c "av_io" ${CMAKE_CURRENT_BINARY_DIR}/io_hostile)
target_include_directories(test_io_hostile PRIVATE ${HDF5_INCLUDE_DIRS})
target_compile_definitions(test_io_hostile PRIVATE ${HDF5_DEFINITIONS})
target_link_libraries(test_io_hostile PRIVATE ${HDF5_C_LIBRARIES} MPI::MPI_C)
