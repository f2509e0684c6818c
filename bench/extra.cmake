# soak: a long-running mixed workload (not a Google Benchmark); CI runs a short mode.
add_executable(soak ${CMAKE_CURRENT_SOURCE_DIR}/soak.cpp)
target_link_libraries(soak PRIVATE punch_all punch_options)
# The hook target and detour must be in the dynamic symbol table (function extents come from it).
set_target_properties(soak PROPERTIES ENABLE_EXPORTS ON)
if(PUNCH_BUILD_TESTS)
  punch_test_program(soak)
  # The short mode CI runs: a few seconds of everything at once, memory checked.
  add_test(NAME soak_short COMMAND soak --seconds 6 --threads 2 --interval 1)
  set_tests_properties(soak_short PROPERTIES TIMEOUT 120)
endif()
