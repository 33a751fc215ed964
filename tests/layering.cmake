# design.md's layering over the #include lines of src/, io/, dist/ and models/: every
# include goes to the same or a lower layer, io/ and dist/ sit on base only, no header
# circles (tests/layering/check.cmake; plain CMake, no build needed).
add_test(NAME layering COMMAND ${CMAKE_COMMAND} -DROOT=${CMAKE_SOURCE_DIR} -P
                               ${CMAKE_CURRENT_SOURCE_DIR}/layering/check.cmake)
