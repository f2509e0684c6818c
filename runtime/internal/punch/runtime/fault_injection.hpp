// punch::runtime::testing — a seam that makes the N-th write or sync fail
// (or several in a row: a failure and then its retries), or slow, for tests only.
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
  kDelay,       //!< Not a failure: the operation first waits 0.2 ms (keeps a live change in flight longer).
};

//! The `nth` (1-based, counted from this call) operation at `point` fails with `kind`. 0 disarms.
void inject_fault(FaultPoint point, std::uint64_t nth, FaultKind kind);

//! `count` for inject_faults: every operation from the first one on fails.
inline constexpr std::uint64_t kEveryOperation = UINT64_MAX;

//! Operations `first`, first+1, ..., first+count-1 (1-based, counted from this
//! call) at `point` fail with `kind`; e.g. a failed write and then its retry
//! (count 2), or every write from the N-th on (kEveryOperation). first 0 disarms.
//! inject_fault(p, n, k) is inject_faults(p, n, 1, k).
void inject_faults(FaultPoint point, std::uint64_t first, std::uint64_t count, FaultKind kind);

//! How many injected faults at `point` have fired since it was last armed.
std::uint64_t faults_fired(FaultPoint point);

//! How many operations at `point` were counted since it was last armed (while armed).
std::uint64_t operations_counted(FaultPoint point);

//! Disarms every fault.
void clear_faults();

}  // namespace punch::runtime::testing
