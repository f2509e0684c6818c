// The runtime's side of the fault-injection seam (see fault_injection.hpp).
#pragma once

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <thread>

#include <punch/runtime/fault_injection.hpp>

namespace punch::runtime::detail {

//! How long a FaultKind::kDelay holds an operation up.
inline constexpr std::chrono::microseconds kInjectedDelay{200};

//! Counts one operation at `point`; returns the fault to simulate when it is the armed one.
std::optional<testing::FaultKind> take_fault(testing::FaultPoint point) noexcept;

//! Whether a fault is armed at `point` (take_fault() may return one). Tests
//! arm and disarm only while no patch runs, so a batch may ask once.
bool fault_armed(testing::FaultPoint point) noexcept;

//! One write attempt (`attempt(bytes)`: bytes written or -errno) as the
//! injected `fault` makes it: EIO or EINTR without writing, a delay before
//! it, or a short write of half the bytes. No fault: the attempt as it is.
template <class Attempt>
long attempt_with_fault(std::optional<testing::FaultKind> fault, std::span<const std::uint8_t> bytes,
                        Attempt&& attempt) {
  if (!fault) return attempt(bytes);
  switch (*fault) {
    case testing::FaultKind::kEio: return -EIO;
    case testing::FaultKind::kEintr: return -EINTR;
    case testing::FaultKind::kDelay: std::this_thread::sleep_for(kInjectedDelay); return attempt(bytes);
    case testing::FaultKind::kShortWrite: return attempt(bytes.first(std::max<std::size_t>(1, bytes.size() / 2)));
  }
  return attempt(bytes);
}

}  // namespace punch::runtime::detail
