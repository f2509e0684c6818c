#include <atomic>
#include <cstdint>

#include "fault_seam.hpp"

namespace punch::runtime {
namespace {

// Per point: operations are numbered from 1 since arming; those in [first, last] fail.
// first == 0 is disarmed. Tests arm and disarm while no patch is running.
struct Armed {
  std::atomic<std::uint64_t> first{0};
  std::atomic<std::uint64_t> last{0};
  std::atomic<std::uint64_t> seen{0};
  std::atomic<std::uint64_t> fired{0};
  std::atomic<testing::FaultKind> kind{testing::FaultKind::kEio};
};

Armed g_armed[2];

Armed& armed(testing::FaultPoint point) { return g_armed[point == testing::FaultPoint::kWrite ? 0 : 1]; }

}  // namespace

void testing::inject_fault(FaultPoint point, std::uint64_t nth, FaultKind kind) { inject_faults(point, nth, 1, kind); }

void testing::inject_faults(FaultPoint point, std::uint64_t first, std::uint64_t count, FaultKind kind) {
  Armed& a = armed(point);
  a.first.store(0, std::memory_order_release);  // Disarmed while the window changes.
  a.kind.store(kind, std::memory_order_relaxed);
  a.seen.store(0, std::memory_order_relaxed);
  a.fired.store(0, std::memory_order_relaxed);
  const std::uint64_t last = count == 0 ? 0 : (count - 1 > UINT64_MAX - first ? UINT64_MAX : first + (count - 1));
  a.last.store(last, std::memory_order_relaxed);
  if (count != 0) a.first.store(first, std::memory_order_release);
}

std::uint64_t testing::faults_fired(FaultPoint point) { return armed(point).fired.load(std::memory_order_acquire); }

std::uint64_t testing::operations_counted(FaultPoint point) {
  return armed(point).seen.load(std::memory_order_acquire);
}

void testing::clear_faults() {
  for (Armed& a : g_armed) a.first.store(0, std::memory_order_release);
}

bool detail::fault_armed(testing::FaultPoint point) noexcept {
  return armed(point).first.load(std::memory_order_acquire) != 0;
}

std::optional<testing::FaultKind> detail::take_fault(testing::FaultPoint point) noexcept {
  Armed& a = armed(point);
  const std::uint64_t first = a.first.load(std::memory_order_acquire);
  if (first == 0) return std::nullopt;  // Unarmed: one relaxed-cost load.
  const std::uint64_t n = a.seen.fetch_add(1, std::memory_order_acq_rel) + 1;
  if (n < first || n > a.last.load(std::memory_order_relaxed)) return std::nullopt;
  a.fired.fetch_add(1, std::memory_order_acq_rel);
  return a.kind.load(std::memory_order_relaxed);
}

}  // namespace punch::runtime
