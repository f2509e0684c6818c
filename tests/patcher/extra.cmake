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

# branch_index_test.cpp: a shared library whose functions jump into the middle
# of their neighbours' first bytes, built by each compiler found (gcc, clang).
set(PUNCH_TAIL_JUMP_SOURCE ${CMAKE_CURRENT_LIST_DIR}/tail_jump_lib.c)
set(PUNCH_TAIL_JUMP_LIBS)
foreach(compiler gcc clang)
  find_program(PUNCH_TAIL_JUMP_${compiler} ${compiler})
  if(PUNCH_TAIL_JUMP_${compiler})
    set(lib ${CMAKE_CURRENT_BINARY_DIR}/libpunch_tail_jump_${compiler}.so)
    add_custom_command(OUTPUT ${lib}
      COMMAND ${PUNCH_TAIL_JUMP_${compiler}} -shared -fPIC -O2 -o ${lib} ${PUNCH_TAIL_JUMP_SOURCE}
      DEPENDS ${PUNCH_TAIL_JUMP_SOURCE} VERBATIM)
    list(APPEND PUNCH_TAIL_JUMP_LIBS ${lib})
  endif()
endforeach()
add_custom_target(punch_tail_jump_libs DEPENDS ${PUNCH_TAIL_JUMP_LIBS})
add_dependencies(punch_patcher_tests punch_tail_jump_libs)
string(REPLACE ";" ":" PUNCH_TAIL_JUMP_PATHS "${PUNCH_TAIL_JUMP_LIBS}")
set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/branch_index_test.cpp
  PROPERTIES COMPILE_DEFINITIONS "PUNCH_TAIL_JUMP_LIBS=\"${PUNCH_TAIL_JUMP_PATHS}\"")

# mid_hook_test.cpp: mid_hook_lib.c built by each compiler found, at -O0 (red
# zone locals) and at -O2 with CET markers; the test hooks every instruction.
set(PUNCH_MID_HOOK_SOURCE ${CMAKE_CURRENT_LIST_DIR}/mid_hook_lib.c)
set(PUNCH_MID_HOOK_LIBS)
foreach(compiler gcc clang)
  if(PUNCH_TAIL_JUMP_${compiler})
    foreach(flavour O0 O2)
      set(flags -O0)
      if(flavour STREQUAL "O2")
        set(flags -O2 -fcf-protection=full)
      endif()
      set(lib ${CMAKE_CURRENT_BINARY_DIR}/libpunch_mid_hook_${compiler}_${flavour}.so)
      add_custom_command(OUTPUT ${lib}
        COMMAND ${PUNCH_TAIL_JUMP_${compiler}} -shared -fPIC ${flags} -o ${lib} ${PUNCH_MID_HOOK_SOURCE}
        DEPENDS ${PUNCH_MID_HOOK_SOURCE} VERBATIM)
      list(APPEND PUNCH_MID_HOOK_LIBS ${lib})
    endforeach()
  endif()
endforeach()
add_custom_target(punch_mid_hook_libs DEPENDS ${PUNCH_MID_HOOK_LIBS})
add_dependencies(punch_patcher_tests punch_mid_hook_libs)
string(REPLACE ";" ":" PUNCH_MID_HOOK_PATHS "${PUNCH_MID_HOOK_LIBS}")
set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/mid_hook_test.cpp
  PROPERTIES COMPILE_DEFINITIONS "PUNCH_MID_HOOK_LIBS=\"${PUNCH_MID_HOOK_PATHS}\"")
