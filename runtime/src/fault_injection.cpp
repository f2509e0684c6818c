#include <atomic>
#include <cstdint>

#include "fault_seam.hpp"

namespace punch::runtime {
namespace {

// One countdown per point: 0 is disarmed, k means "the k-th operation from now fails".
struct Armed {
  std::atomic<std::uint64_t> countdown{0};
  std::atomic<testing::FaultKind> kind{testing::FaultKind::kEio};
};

Armed g_armed[2];

Armed& armed(testing::FaultPoint point) { return g_armed[point == testing::FaultPoint::kWrite ? 0 : 1]; }

}  // namespace

void testing::inject_fault(FaultPoint point, std::uint64_t nth, FaultKind kind) {
  Armed& a = armed(point);
  a.kind.store(kind, std::memory_order_relaxed);
  a.countdown.store(nth, std::memory_order_release);
}

void testing::clear_faults() {
  for (Armed& a : g_armed) a.countdown.store(0, std::memory_order_release);
}

std::optional<testing::FaultKind> detail::take_fault(testing::FaultPoint point) noexcept {
  Armed& a = armed(point);
  std::uint64_t n = a.countdown.load(std::memory_order_relaxed);
  while (n != 0) {  // Armed: count this operation down; the one reaching zero fails.
    if (a.countdown.compare_exchange_weak(n, n - 1, std::memory_order_acq_rel)) {
      if (n == 1) return a.kind.load(std::memory_order_relaxed);
      return std::nullopt;
    }
  }
  return std::nullopt;
}

}  // namespace punch::runtime
