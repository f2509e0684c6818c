# Patcher tests: export the test binary's symbols so function_extent() (dladdr1)
# finds the assembly test functions (corpus, hook targets). Keep this additive.
set_target_properties(punch_patcher_tests PROPERTIES ENABLE_EXPORTS ON)
