# Differential expression and posterior outputs: the DE maths against hand-computed cases,
# `atlasvi de` end to end on simulated data (columns, order, sanity, the same table on 1,
# 2 and 3 ranks) and `atlasvi posterior`.
av_test(test_de_math test_de_math.c av_core)

string(REPLACE ";" " " AV_DE_MPIEXEC "${AV_MPIEXEC}")
add_test(NAME de_cli COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/de_cli.sh)
set_tests_properties(de_cli PROPERTIES TIMEOUT 600 ENVIRONMENT
  "AV_BIN=$<TARGET_FILE:atlasvi>;AV_MPIEXEC=${AV_DE_MPIEXEC};AV_PY=/usr/bin/python3;AV_SRC=${CMAKE_SOURCE_DIR};WORK=${CMAKE_CURRENT_BINARY_DIR}/de_cli;OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1;OMP_WAIT_POLICY=passive")
