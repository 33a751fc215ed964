# Out-of-core training (atlasvi train --stream; src/stream.h, src/app_stream.c):
#  - the window schedule and the prefetching reader, alone (every training cell once per
#    epoch, no validation cell, W chunks resident, read errors carried to the caller);
#  - av_train from a stream against the in-memory shard: full-batch histories (validation
#    included, so the same split) to 1e-4, minibatch loss curves alike;
#  - the command line on a simulated file with tiny chunks (many chunks, window 2), on 1
#    and 2 ranks, against in-memory training; the streamed latent equals `atlasvi latent`;
#  - a negative count that only the last rank reads, inside a chunk read by the prefetch
#    thread: every rank ends non-zero and the message appears once.
av_test(test_stream_sched test_stream.c av_core sched)
add_executable(test_stream_bin test_stream.c)
target_link_libraries(test_stream_bin PRIVATE av_core)
foreach(what feed train)
  add_test(NAME test_stream_${what} COMMAND test_stream_bin ${what})
  set_tests_properties(test_stream_${what} PROPERTIES TIMEOUT 120
    ENVIRONMENT "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
endforeach()

set(AV_ST_DIR ${CMAKE_CURRENT_BINARY_DIR}/stream_files)
file(MAKE_DIRECTORY ${AV_ST_DIR})
set(AV_ST_EXE $<TARGET_FILE:atlasvi>)
set(AV_ST_F ${AV_ST_DIR}/sim.h5ad)
set(AV_ST_ENV "OMP_NUM_THREADS=1;OMP_WAIT_POLICY=passive;OPENBLAS_NUM_THREADS=1")
string(REPLACE ";" "|" AV_ST_MPI "${AV_MPIEXEC}")
set(AV_ST_TRAIN "train|${AV_ST_F}|--batch-key|batch|--max-epochs|6|--n-hidden|32|--n-epochs-kl-warmup|6|--no-progress")
set(AV_ST_OPTS "--stream|--stream-chunk-cells|97|--shuffle-window|2")

function(av_st_run name np cmds)
  add_test(NAME ${name} COMMAND ${CMAKE_COMMAND} "-DCMDS=${cmds}" ${ARGN} -P ${AV_DEQ_RUN})
  set_tests_properties(${name} PROPERTIES TIMEOUT 170 PROCESSORS ${np}
    ENVIRONMENT "${AV_ST_ENV}" SKIP_REGULAR_EXPRESSION "skipped: ")
endfunction()

av_st_run(test_stream_cli_mem 1
  "${AV_ST_EXE}|simulate|${AV_ST_F}|--n-cells|3000|--n-genes|200|--seed|4^${AV_ST_EXE}|${AV_ST_TRAIN}|--metrics|${AV_ST_DIR}/mem.json|--model-out|${AV_ST_DIR}/mem.h5"
  -DRC=zero)
set_tests_properties(test_stream_cli_mem PROPERTIES FIXTURES_SETUP stream_file)
foreach(n 1 2)
  av_st_run(test_stream_cli_np${n} ${n}
    "${AV_ST_MPI}|-n|${n}|${AV_ST_EXE}|${AV_ST_TRAIN}|${AV_ST_OPTS}|--metrics|${AV_ST_DIR}/st${n}.json|--model-out|${AV_ST_DIR}/st${n}.h5|--output|${AV_ST_DIR}/st${n}.h5ad^${AV_ST_EXE}|latent|${AV_ST_DIR}/st${n}.h5|${AV_ST_F}|--output|${AV_ST_DIR}/lat${n}.h5ad^$<TARGET_FILE:test_dist_equiv>|latent|${AV_ST_DIR}/st${n}.h5ad|${AV_ST_DIR}/lat${n}.h5ad|1e-5^$<TARGET_FILE:test_stream_bin>|compare|${AV_ST_DIR}/mem.json|${AV_ST_DIR}/st${n}.json|0.03"
    -DRC=zero)
  set_tests_properties(test_stream_cli_np${n} PROPERTIES FIXTURES_REQUIRED stream_file)
endforeach()

set(AV_ST_HEART ${AV_DATA}/heart_hca_fibro_endo_320x136.h5ad)
av_st_run(test_stream_fail_np2 2
  "$<TARGET_FILE:test_dist_equiv>|mkbad|${AV_ST_HEART}|${AV_ST_DIR}/bad.h5ad^${AV_ST_MPI}|-n|2|sh|${CMAKE_CURRENT_SOURCE_DIR}/dist_equiv_rank_status.sh|${AV_ST_EXE}|train|${AV_ST_DIR}/bad.h5ad|--batch-key|assay_ontology_term_id|--max-epochs|2|--no-progress|--model-out|${AV_ST_DIR}/never.h5|--stream|--stream-chunk-cells|40|--shuffle-window|2"
  -DRC=any "-DONCE=atlasvi: error: [A-Za-z0-9_/:.,' -]*bad.h5ad: negative count -3 at cell 317"
  "-DEACH=atlasvi exit status 1" -DEACH_N=2 "-DABSENT=MPI_ABORT|aborting|exit status [02-9]"
  -DMAX_S=30 -DNEED=${AV_ST_HEART})
