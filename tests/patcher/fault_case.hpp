// The cases the fault tests run: which operation fails, and whether the other
// threads are held for the change. With none to hold and none asleep, a
// change's syncs are this thread's own serializing instruction and cannot
// fail: sync faults need the hold off.
#pragma once

#include <ostream>
#include <string>

#include <gtest/gtest.h>

#include <punch/runtime/fault_injection.hpp>

namespace punch::test {

struct FaultCase {
  runtime::testing::FaultPoint point;
  bool hold_threads;
};

inline void PrintTo(const FaultCase& c, std::ostream* out) {
  *out << (c.point == runtime::testing::FaultPoint::kWrite ? "write" : "sync")
       << (c.hold_threads ? ", held" : ", unheld");
}

//! Write faults held and unheld, sync faults unheld.
inline auto fault_cases() {
  using runtime::testing::FaultPoint;
  return ::testing::Values(FaultCase{FaultPoint::kWrite, true}, FaultCase{FaultPoint::kWrite, false},
                           FaultCase{FaultPoint::kSync, false});
}

//! "WriteHeld", "WriteUnheld", "SyncUnheld".
inline std::string fault_case_name(const ::testing::TestParamInfo<FaultCase>& info) {
  return std::string(info.param.point == runtime::testing::FaultPoint::kWrite ? "Write" : "Sync") +
         (info.param.hold_threads ? "Held" : "Unheld");
}

}  // namespace punch::test
