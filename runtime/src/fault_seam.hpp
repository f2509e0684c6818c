// The runtime's side of the fault-injection seam (see fault_injection.hpp).
#pragma once

#include <chrono>
#include <optional>

#include <punch/runtime/fault_injection.hpp>

namespace punch::runtime::detail {

//! How long a FaultKind::kDelay holds an operation up.
inline constexpr std::chrono::microseconds kInjectedDelay{200};

//! Counts one operation at `point`; returns the fault to simulate when it is the armed one.
std::optional<testing::FaultKind> take_fault(testing::FaultPoint point) noexcept;

//! Whether a fault is armed at `point` (take_fault() may return one). Tests
//! arm and disarm only while no patch runs, so a batch may ask once.
bool fault_armed(testing::FaultPoint point) noexcept;

}  // namespace punch::runtime::detail
