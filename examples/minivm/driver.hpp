// minivm's multi-threaded run: worker threads run the program again and again
// while a chaos thread recompiles and invalidates its functions.
#pragma once

#include <cstdint>
#include <string>

#include <punch/result.hpp>

#include "bytecode.hpp"

namespace minivm {

struct DriverOptions {
  int threads = 4;
  double seconds = 1.0;
  std::uint32_t hot_calls = 2;
};

struct DriverReport {
  std::string result;    // Of the last run that finished.
  std::string expected;  // Of one run in the interpreter alone.
  std::uint64_t runs = 0, wrong = 0;
  std::uint64_t ic_patches = 0, call_retargets = 0, deopts = 0;
  std::uint64_t compiles = 0, guards_tripped = 0, entries_invalidated = 0, versions_freed = 0;
  std::string first_error;  // The first failed run's message, if any.
};

//! Runs `program` as described above; an error when the VM cannot start.
punch::Result<DriverReport> run_driver(const Program& program, const DriverOptions& options);

}  // namespace minivm
