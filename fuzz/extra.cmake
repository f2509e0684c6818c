# fuzz_relocate runs original and relocated code in Unicorn.
if(TARGET fuzz_relocate)
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(UNICORN REQUIRED IMPORTED_TARGET unicorn)
  target_link_libraries(fuzz_relocate PRIVATE PkgConfig::UNICORN)
endif()
