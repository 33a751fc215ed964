# Tests of dist/: the MPI layer (under mpiexec -n 1, 2, 4) and the shard plan (pure).

# Shard arithmetic: no MPI involved.
av_test(test_dist_shard test_dist_shard.c av_dist)

# The same library compiled with a tiny piece size, so that the piecewise paths used for
# buffers of more than 2^30 elements run on small buffers.
file(GLOB AV_DIST_TEST_SRC CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/dist/*.c)
add_library(av_dist_piece7 STATIC ${AV_DIST_TEST_SRC})
target_compile_definitions(av_dist_piece7 PRIVATE DIST_PIECE=7)
target_link_libraries(av_dist_piece7 PUBLIC av_base MPI::MPI_C)

set(AV_DIST_ENV "AV_DATA=${AV_DATA};AV_SRC=${CMAKE_SOURCE_DIR};OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")

add_executable(test_dist_mpi test_dist_mpi.c)
target_link_libraries(test_dist_mpi PRIVATE av_dist)
add_executable(test_dist_mpi_piece test_dist_mpi.c)
target_link_libraries(test_dist_mpi_piece PRIVATE av_dist_piece7)
add_executable(test_dist_fail test_dist_fail.c)
target_link_libraries(test_dist_fail PRIVATE av_dist)

# Without mpiexec: the same binary must work as one rank.
add_test(NAME test_dist_mpi_serial COMMAND test_dist_mpi)
set_tests_properties(test_dist_mpi_serial PROPERTIES SKIP_RETURN_CODE 77 ENVIRONMENT "${AV_DIST_ENV}")

foreach(n 1 2 4)
  foreach(t test_dist_mpi test_dist_mpi_piece)
    add_test(NAME ${t}_np${n} COMMAND ${AV_MPIEXEC} -n ${n} $<TARGET_FILE:${t}>)
    set_tests_properties(${t}_np${n} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 120
      PROCESSORS ${n} ENVIRONMENT "${AV_DIST_ENV}")
  endforeach()
endforeach()

# Failure agreement and abort: a CMake script runs mpiexec and checks the exit status and
# how many times a message appears on stderr (exactly once, however many ranks fail).
set(AV_DIST_CHECK ${CMAKE_CURRENT_BINARY_DIR}/dist_check_output.cmake)
file(WRITE ${AV_DIST_CHECK} [=[
# -DCMD=a|b|c (the command, '|'-separated) -DRC=zero|nonzero -DONCE=<regex> -DABSENT=<regex>
string(REPLACE "|" ";" cmd "${CMD}")
execute_process(COMMAND ${cmd} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err
                TIMEOUT 90)
message("exit: ${rc}\n--- stdout\n${out}--- stderr\n${err}---")
if(RC STREQUAL "zero" AND NOT rc STREQUAL "0")
  message(FATAL_ERROR "expected exit status 0, got ${rc}")
endif()
if(RC STREQUAL "nonzero" AND (rc STREQUAL "0" OR NOT rc MATCHES "^[0-9]+$"))
  message(FATAL_ERROR "expected a non-zero exit status, got '${rc}'")
endif()
if(ONCE)
  string(REGEX MATCHALL "${ONCE}" hits "${err}")
  list(LENGTH hits n)
  if(NOT n EQUAL 1)
    message(FATAL_ERROR "expected '${ONCE}' exactly once on stderr, found ${n} times")
  endif()
endif()
if(ABSENT AND ("${err}${out}" MATCHES "${ABSENT}"))
  message(FATAL_ERROR "unexpected output matching '${ABSENT}'")
endif()
]=])

string(REPLACE ";" "|" AV_MPIEXEC_BAR "${AV_MPIEXEC}")
function(av_dist_check name np rc once absent)
  string(REPLACE ";" "|" args "${ARGN}")
  add_test(NAME ${name}_np${np} COMMAND ${CMAKE_COMMAND}
    "-DCMD=${AV_MPIEXEC_BAR}|-n|${np}|$<TARGET_FILE:test_dist_fail>|${args}"
    "-DRC=${rc}" "-DONCE=${once}" "-DABSENT=${absent}" -P ${AV_DIST_CHECK})
  set_tests_properties(${name}_np${np} PROPERTIES TIMEOUT 120 PROCESSORS ${np}
    ENVIRONMENT "${AV_DIST_ENV}")
endfunction()

# Failing ranks 3 and 1 (modulo the rank count): the lowest failing rank prints, once.
av_dist_check(test_dist_fail_agree 1 zero "atlasvi: error: rank 0 failed on purpose"
  "failed on purpose.*failed on purpose|should not print|rank [0-9]+: dist_any" agree 3 1)
foreach(n 2 4)
  av_dist_check(test_dist_fail_agree ${n} zero "atlasvi: error: rank 1 failed on purpose"
    "rank [023] failed on purpose|should not print|rank [0-9]+: dist_any" agree 3 1)
endforeach()
foreach(n 1 2 4)
  av_dist_check(test_dist_fail_none ${n} zero "" "atlasvi: error|rank [0-9]+: dist_any" none)
  av_dist_check(test_dist_fail_abort ${n} nonzero "atlasvi: error: aborting on purpose"
    "not reached" abort)
endforeach()
