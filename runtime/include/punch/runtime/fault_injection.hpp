// punch::runtime::testing — a seam that makes the N-th write or sync fail, for tests only.
//
// Production code never arms it; an unarmed seam costs one relaxed atomic load.
#pragma once

#include <cstdint>

namespace punch::runtime::testing {

//! Which operation to fail.
enum class FaultPoint { kWrite, kSync };

//! How it fails.
enum class FaultKind {
  kEio,         //!< The call fails with EIO (not retried).
  kEintr,       //!< The syscall is interrupted once (retried by the writer).
  kShortWrite,  //!< Only part of the bytes are written (the rest is retried).
};

//! The `nth` (1-based, counted from this call) operation at `point` fails with `kind`. 0 disarms.
void inject_fault(FaultPoint point, std::uint64_t nth, FaultKind kind);

//! Disarms every fault.
void clear_faults();

}  // namespace punch::runtime::testing
