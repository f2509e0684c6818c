# Patcher tests: export the test binary's symbols so function_containing() (dladdr1)
# finds the assembly test functions (corpus, hook targets). Keep this additive.
set_target_properties(punch_patcher_tests PROPERTIES ENABLE_EXPORTS ON)

# -mfentry entries for the hook tests: the profiling call (both compilers) and,
# with g++ (clang has no -mnop-mcount on x86; it needs non-PIC code), the 5-byte
# nop that replaces it. hook_fentry_test.cpp reads PUNCH_HAVE_NOP_MCOUNT.
# (clang's -fsanitize=function would put a signature jump before the profiling call.)
if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/hook_fentry_call_target.cpp
    PROPERTIES COMPILE_OPTIONS "-pg;-mfentry;-fno-sanitize=function")
else()
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/hook_fentry_call_target.cpp
    PROPERTIES COMPILE_OPTIONS "-pg;-mfentry")
endif()
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/hook_fentry_nop_target.cpp
    PROPERTIES COMPILE_OPTIONS "-pg;-mfentry;-mnop-mcount;-fno-pie")
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/hook_fentry_test.cpp
    PROPERTIES COMPILE_DEFINITIONS "PUNCH_HAVE_NOP_MCOUNT=1")
endif()
