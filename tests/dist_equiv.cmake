# Data-parallel equivalence (design.md "Distribution", model-spec.md 6.10), under mpiexec:
#  - gradients, loss and BatchNorm running statistics of one global minibatch split over
#    1..4 ranks equal the 1-rank ones (test_dist_equiv grad);
#  - av_train's loss curves on 1 and 2 ranks agree within a tolerance, and with full-batch
#    steps (rank-independent minibatches) av_train on 2 and 3 ranks follows 1 rank exactly;
#  - `atlasvi latent` on 1, 2 and 3 ranks gathers the 1-rank latents row for row;
#  - a bad input seen by every rank, and one seen only by the last rank, end every rank
#    non-zero with the error printed once (TIMEOUT catches a hang).
add_executable(test_dist_equiv test_dist_equiv.c)
target_link_libraries(test_dist_equiv PRIVATE av_app ${HDF5_C_LIBRARIES} MPI::MPI_C)
target_include_directories(test_dist_equiv PRIVATE ${HDF5_INCLUDE_DIRS})
target_compile_definitions(test_dist_equiv PRIVATE ${HDF5_DEFINITIONS})

set(AV_DEQ_ENV "OMP_NUM_THREADS=1;OMP_WAIT_POLICY=passive;OPENBLAS_NUM_THREADS=1;AV_DATA=${AV_DATA}")
set(AV_DEQ_DIR ${CMAKE_CURRENT_BINARY_DIR}/dist_equiv_files)
file(MAKE_DIRECTORY ${AV_DEQ_DIR})
set(AV_DEQ_HEART ${AV_DATA}/heart_hca_fibro_endo_320x136.h5ad)

# 1. Gradient equivalence.
foreach(n 1 2 3 4)
  add_test(NAME test_dist_equiv_grad_np${n}
    COMMAND ${AV_MPIEXEC} -n ${n} $<TARGET_FILE:test_dist_equiv> grad)
  set_tests_properties(test_dist_equiv_grad_np${n} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 60
    PROCESSORS ${n} ENVIRONMENT "${AV_DEQ_ENV}")
endforeach()

# 2. Short training on 1 and 2 ranks; the histories are compared within 1% per epoch
#    from epoch 1 on (the global minibatches differ: see run_compare in the source).
foreach(n 1 2)
  add_test(NAME test_dist_equiv_train_np${n}
    COMMAND ${AV_MPIEXEC} -n ${n} $<TARGET_FILE:test_dist_equiv> train ${AV_DEQ_DIR}/hist_np${n}.txt)
  set_tests_properties(test_dist_equiv_train_np${n} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 60
    PROCESSORS ${n} ENVIRONMENT "${AV_DEQ_ENV}" FIXTURES_SETUP dist_equiv_hist)
endforeach()
add_test(NAME test_dist_equiv_train_compare
  COMMAND test_dist_equiv compare ${AV_DEQ_DIR}/hist_np1.txt ${AV_DEQ_DIR}/hist_np2.txt 0.01)
set_tests_properties(test_dist_equiv_train_compare PROPERTIES TIMEOUT 30
  FIXTURES_REQUIRED dist_equiv_hist)

# 2b. With one full-batch step per epoch the global minibatch is the same on any number
#     of ranks: av_train on 2 and 3 ranks must then follow the 1-rank run (history and
#     final weights) to float tolerance.
foreach(n 1 2 3)
  add_test(NAME test_dist_equiv_trainfull_np${n}
    COMMAND ${AV_MPIEXEC} -n ${n} $<TARGET_FILE:test_dist_equiv> train ${AV_DEQ_DIR}/full_np${n}.txt full)
  set_tests_properties(test_dist_equiv_trainfull_np${n} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 60
    PROCESSORS ${n} ENVIRONMENT "${AV_DEQ_ENV}" FIXTURES_SETUP dist_equiv_full)
endforeach()
foreach(n 2 3)
  add_test(NAME test_dist_equiv_trainfull_compare_np${n}
    COMMAND test_dist_equiv compare_exact ${AV_DEQ_DIR}/full_np1.txt ${AV_DEQ_DIR}/full_np${n}.txt 1e-5)
  set_tests_properties(test_dist_equiv_trainfull_compare_np${n} PROPERTIES TIMEOUT 30
    FIXTURES_REQUIRED dist_equiv_full)
endforeach()

# A runner for command sequences: every command but the last must succeed; the last one's
# exit status and stderr are checked. -DCMDS=a|b|c^d|e (args '|'-separated, commands '^'),
# -DRC=zero|nonzero|any, -DONCE=<regex exactly once on stderr>, -DABSENT=<regex nowhere>,
# -DEACH=<regex> -DEACH_N=<n>: the regex appears exactly n times on stderr,
# -DNEED=<file that must exist, else the test is skipped>, -DMAX_S=<seconds for the last>.
set(AV_DEQ_RUN ${CMAKE_CURRENT_BINARY_DIR}/dist_equiv_run.cmake)
file(WRITE ${AV_DEQ_RUN} [=[
if(NEED AND NOT EXISTS "${NEED}")
  message("skipped: ${NEED} not found")
  return()
endif()
string(REPLACE "^" ";" cmds "${CMDS}")
list(LENGTH cmds ncmd)
set(i 0)
foreach(c ${cmds})
  math(EXPR i "${i} + 1")
  string(REPLACE "|" ";" cmd "${c}")
  string(TIMESTAMP t0 "%s")
  execute_process(COMMAND ${cmd} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err
                  TIMEOUT 55)
  string(TIMESTAMP t1 "%s")
  math(EXPR dt "${t1} - ${t0}")
  string(REPLACE ";" " " shown "${cmd}")
  message("$ ${shown}\nexit: ${rc} after ${dt} s\n--- stdout\n${out}--- stderr\n${err}---")
  if(i LESS ncmd OR RC STREQUAL "zero")
    if(NOT rc STREQUAL "0")
      message(FATAL_ERROR "expected exit status 0, got '${rc}'")
    endif()
  elseif(RC STREQUAL "any")
  elseif(rc STREQUAL "0" OR NOT rc MATCHES "^[0-9]+$")
    message(FATAL_ERROR "expected a non-zero exit status, got '${rc}'")
  endif()
endforeach()
if(MAX_S AND dt GREATER MAX_S)
  message(FATAL_ERROR "took ${dt} s, more than ${MAX_S} s")
endif()
if(ONCE)
  string(REGEX MATCHALL "${ONCE}" hits "${err}")
  list(LENGTH hits nh)
  if(NOT nh EQUAL 1)
    message(FATAL_ERROR "expected '${ONCE}' exactly once on stderr, found ${nh} times")
  endif()
endif()
if(EACH)
  string(REGEX MATCHALL "${EACH}" hits "${err}")
  list(LENGTH hits nh)
  if(NOT nh EQUAL EACH_N)
    message(FATAL_ERROR "expected '${EACH}' ${EACH_N} times on stderr, found ${nh} times")
  endif()
endif()
if(ABSENT AND ("${err}${out}" MATCHES "${ABSENT}"))
  message(FATAL_ERROR "unexpected output matching '${ABSENT}'")
endif()
]=])

string(REPLACE ";" "|" AV_DEQ_MPI "${AV_MPIEXEC}")
set(AV_DEQ_EXE $<TARGET_FILE:atlasvi>)
set(AV_DEQ_T $<TARGET_FILE:test_dist_equiv>)
function(av_deq_run name np cmds)
  add_test(NAME ${name} COMMAND ${CMAKE_COMMAND} "-DCMDS=${cmds}" ${ARGN} -P ${AV_DEQ_RUN})
  set_tests_properties(${name} PROPERTIES TIMEOUT 110 PROCESSORS ${np}
    ENVIRONMENT "${AV_DEQ_ENV}" SKIP_REGULAR_EXPRESSION "skipped: ")
endfunction()

# 3. Gather: a model trained on one rank (the plain binary, no mpiexec), then `atlasvi
#    latent` on 1, 2 and 3 ranks must give train's latents, rows matched by obs name.
av_deq_run(test_dist_equiv_latent_model 1
  "${AV_DEQ_EXE}|train|${AV_DEQ_HEART}|--batch-key|assay_ontology_term_id|--max-epochs|2|--n-hidden|32|--no-progress|--model-out|${AV_DEQ_DIR}/m.h5|--output|${AV_DEQ_DIR}/a.h5ad"
  -DRC=zero -DNEED=${AV_DEQ_HEART})
set_tests_properties(test_dist_equiv_latent_model PROPERTIES FIXTURES_SETUP dist_equiv_model)
foreach(n 1 2 3)
  av_deq_run(test_dist_equiv_latent_np${n} ${n}
    "${AV_DEQ_MPI}|-n|${n}|${AV_DEQ_EXE}|latent|${AV_DEQ_DIR}/m.h5|${AV_DEQ_HEART}|--output|${AV_DEQ_DIR}/b${n}.h5ad^${AV_DEQ_T}|latent|${AV_DEQ_DIR}/a.h5ad|${AV_DEQ_DIR}/b${n}.h5ad|1e-5"
    -DRC=zero -DNEED=${AV_DEQ_HEART})
  set_tests_properties(test_dist_equiv_latent_np${n} PROPERTIES FIXTURES_REQUIRED dist_equiv_model)
endforeach()

# 4. Failures: every rank exits non-zero, promptly, and the error line appears exactly
#    once. A missing file is seen by every rank (rank 0 first); a negative count near the
#    end of the matrix is seen only by the last rank, which reads those cells (rank 0 reads
#    only the metadata and indptr). As a user runs it, mpiexec must exit non-zero (np2); to
#    see that each rank ends non-zero on its own (mpiexec stops the others as soon as one
#    fails), each rank runs under dist_equiv_rank_status.sh, which reports atlasvi's status
#    and exits 0, and the report "atlasvi exit status 1" must appear once per rank (np2, np3).
function(av_deq_fail bad name np wrap)
  if(bad STREQUAL "missing")
    set(prep "")
    set(args "train|${AV_DEQ_DIR}/no_such_file.h5ad|--batch-key|b|--model-out|${AV_DEQ_DIR}/never.h5")
    set(once "atlasvi: error: [A-Za-z0-9_/:.,' -]*no_such_file.h5ad: cannot open")
    set(need "")
  else()
    set(bf ${AV_DEQ_DIR}/${name}.h5ad)
    set(prep "${AV_DEQ_T}|mkbad|${AV_DEQ_HEART}|${bf}^")
    set(args "train|${bf}|--batch-key|assay_ontology_term_id|--max-epochs|1|--no-progress|--model-out|${AV_DEQ_DIR}/never.h5")
    set(once "atlasvi: error: [A-Za-z0-9_/:.,' -]*${name}.h5ad: negative count -3 at cell 317")
    set(need "-DNEED=${AV_DEQ_HEART}")
  endif()
  if(wrap)
    av_deq_run(${name} ${np} "${prep}${AV_DEQ_MPI}|-n|${np}|sh|${CMAKE_CURRENT_SOURCE_DIR}/dist_equiv_rank_status.sh|${AV_DEQ_EXE}|${args}"
      -DRC=any "-DONCE=${once}" "-DEACH=atlasvi exit status 1" -DEACH_N=${np}
      "-DABSENT=MPI_ABORT|aborting|training scVI|exit status [02-9]" -DMAX_S=30 ${need})
  else()
    av_deq_run(${name} ${np} "${prep}${AV_DEQ_MPI}|-n|${np}|${AV_DEQ_EXE}|${args}"
      -DRC=nonzero "-DONCE=${once}" "-DABSENT=MPI_ABORT|aborting|training scVI" -DMAX_S=30 ${need})
  endif()
endfunction()
foreach(bad missing negative)
  av_deq_fail(${bad} test_dist_equiv_fail_${bad}_np2 2 0)
  foreach(n 2 3)
    av_deq_fail(${bad} test_dist_equiv_fail_${bad}_each_np${n} ${n} 1)
  endforeach()
endforeach()
