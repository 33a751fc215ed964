# Periodic checkpoints survive SIGKILL; --resume finishes the run, with 1 or 2 ranks.
find_program(AV_H5DUMP h5dump)
if(AV_H5DUMP)
  add_test(NAME checkpoint_resume_np1 COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/checkpoint_resume.sh
    $<TARGET_FILE:atlasvi> ${AV_DATA} ${CMAKE_CURRENT_BINARY_DIR}/ckpt1)
  add_test(NAME checkpoint_resume_np2 COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/checkpoint_resume.sh
    $<TARGET_FILE:atlasvi> ${AV_DATA} ${CMAKE_CURRENT_BINARY_DIR}/ckpt2 ${AV_MPIEXEC} -n 2)
  set_tests_properties(checkpoint_resume_np1 checkpoint_resume_np2 PROPERTIES TIMEOUT 300
    SKIP_RETURN_CODE 77 ENVIRONMENT "OMP_NUM_THREADS=1")
endif()
