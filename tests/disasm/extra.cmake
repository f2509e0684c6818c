# punch_disasm_tests runs code in Unicorn (differential tests of relocation)
# and exports its symbols so function_containing() finds the corpus in .dynsym.
find_package(PkgConfig REQUIRED)
pkg_check_modules(UNICORN REQUIRED IMPORTED_TARGET unicorn)
target_link_libraries(punch_disasm_tests PRIVATE PkgConfig::UNICORN)
set_target_properties(punch_disasm_tests PROPERTIES ENABLE_EXPORTS ON)
