# End-to-end tests of the atlasvi command line (POSIX shell scripts tests/cli_*.sh, helpers
# in tests/cli_lib.sh): every subcommand on a simulated file, on one process and under
# mpiexec -n 2, and bad input (missing, not HDF5, truncated or corrupted files, unknown
# keys, negative/NaN/Inf counts, empty cells, non-integer counts, wrong model files,
# mismatched genes) giving one "atlasvi: error:" line and exit 1, without a hang.
# The bad files are written at test time by make_bad_inputs (io/'s CSR writer, no Python);
# written files are checked by check_h5ad_structure (HDF5) and, where /usr/bin/python3
# has anndata, by anndata.read_h5ad (tests/cli_check_anndata.py).
# Everything is written under ${CMAKE_CURRENT_BINARY_DIR}/cli_*.

function(av_cli_tool name)
  add_executable(${name} ${name}.c)
  target_include_directories(${name} PRIVATE ${HDF5_INCLUDE_DIRS})
  target_compile_definitions(${name} PRIVATE ${HDF5_DEFINITIONS})
  target_link_libraries(${name} PRIVATE av_io ${HDF5_C_LIBRARIES} MPI::MPI_C)
endfunction()
av_cli_tool(make_bad_inputs)
av_cli_tool(check_h5ad_structure)

string(REPLACE ";" " " AV_CLI_MPIEXEC "${AV_MPIEXEC}")
set(AV_CLI_ENV
  "AV_BIN=$<TARGET_FILE:atlasvi>"
  "AV_CHECK=$<TARGET_FILE:check_h5ad_structure>"
  "AV_MAKE_BAD=$<TARGET_FILE:make_bad_inputs>"
  "AV_MPIEXEC=${AV_CLI_MPIEXEC}"
  "AV_PY=/usr/bin/python3"
  "AV_SRC=${CMAKE_SOURCE_DIR}"
  "AV_DATA=${AV_DATA}"
  "OMP_NUM_THREADS=1"
  "OPENBLAS_NUM_THREADS=1"
  "OMP_WAIT_POLICY=passive"
  "CLI_TIMEOUT=120")
set(AV_CLI_DIR ${CMAKE_CURRENT_BINARY_DIR}/cli)

# name, number of processes, script, arguments
function(av_cli_test name np script)
  add_test(NAME ${name} COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/${script} ${ARGN})
  set_tests_properties(${name} PROPERTIES TIMEOUT 300 ENVIRONMENT "${AV_CLI_ENV};CLI_NP=${np}")
endfunction()

av_cli_test(cli_help 1 cli_help.sh ${AV_CLI_DIR}/help)
av_cli_test(cli_e2e 1 cli_e2e.sh ${AV_CLI_DIR}/e2e)
av_cli_test(cli_e2e_mpi 2 cli_e2e.sh ${AV_CLI_DIR}/e2e_mpi)
# outputs that are FIFOs, devices, on a full file system, at the name length limit, or
# written by two runs at once (tests/cli_outputs.sh)
av_cli_test(cli_outputs 1 cli_outputs.sh ${AV_CLI_DIR}/outputs)
av_cli_test(cli_bad_setup 1 cli_setup.sh ${AV_CLI_DIR}/bad_inputs)
set_tests_properties(cli_bad_setup PROPERTIES FIXTURES_SETUP av_cli_bad_inputs)
av_cli_test(cli_bad 1 cli_bad.sh ${AV_CLI_DIR}/bad_inputs ${AV_CLI_DIR}/bad)
av_cli_test(cli_bad_mpi 2 cli_bad.sh ${AV_CLI_DIR}/bad_inputs ${AV_CLI_DIR}/bad_mpi)
av_cli_test(cli_bad_model 1 cli_bad_model.sh ${AV_CLI_DIR}/bad_inputs ${AV_CLI_DIR}/bad_model)
av_cli_test(cli_bad_model_mpi 2 cli_bad_model.sh ${AV_CLI_DIR}/bad_inputs
  ${AV_CLI_DIR}/bad_model_mpi)
set_tests_properties(cli_bad cli_bad_mpi cli_bad_model cli_bad_model_mpi PROPERTIES
  FIXTURES_REQUIRED av_cli_bad_inputs)
# two MPI ranks each: keep the MPI tests from running at the same time on a small machine
set_tests_properties(cli_e2e_mpi cli_bad_mpi cli_bad_model_mpi PROPERTIES RESOURCE_LOCK av_cli_mpi PROCESSORS 2)
# the OpenMP wait policy main.c picks (its own environment: no OMP_WAIT_POLICY preset)
add_test(NAME cli_waits COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/cli_waits.sh ${AV_CLI_DIR}/waits)
set_tests_properties(cli_waits PROPERTIES TIMEOUT 300 ENVIRONMENT "${AV_CLI_ENV};CLI_NP=1"
  RESOURCE_LOCK av_cli_mpi PROCESSORS 2)
