// ranges_in_use: the one way punch proves no thread is running code it wants to free.
//
// Out-of-line copies of the live protocol, removed hooks' trampolines and a
// VM's replaced JIT code all end the same way: their entry jumps are gone and
// synced, so only a thread already inside can still be there. One rendezvous
// reads every thread's saved rip; a thread asleep in a system call is not
// signalled (that would make its poll or nanosleep fail with EINTR): where it
// will resume is read instead. A thread that cannot answer (all signals
// blocked) is cleared only if it is blocked in a system call outside the range.
#include <punch/runtime/threads.hpp>

#include <atomic>
#include <memory>

namespace punch::runtime {
namespace {

// Shared with the visitor, which runs in signal handlers: plain data and atomics only.
struct RipCheck {
  const CodeRange* ranges = nullptr;
  std::size_t count = 0;
  std::atomic<bool>* in_use = nullptr;
};

void mark_ranges_holding_rip(ucontext_t* context, void* arg) {
  const auto* check = static_cast<const RipCheck*>(arg);
  const auto rip = static_cast<std::uintptr_t>(context->uc_mcontext.gregs[REG_RIP]);
  for (std::size_t i = 0; i < check->count; ++i)
    if (check->ranges[i].contains(rip)) check->in_use[i].store(true, std::memory_order_relaxed);
}

}  // namespace

Result<std::vector<bool>> ranges_in_use(std::span<const CodeRange> ranges, std::chrono::milliseconds timeout) {
  if (ranges.empty()) return std::vector<bool>{};
  auto in_use = std::make_unique<std::atomic<bool>[]>(ranges.size());
  for (std::size_t i = 0; i < ranges.size(); ++i) in_use[i].store(false, std::memory_order_relaxed);
  RipCheck check{ranges.data(), ranges.size(), in_use.get()};

  auto rendezvous = visit_other_threads(mark_ranges_holding_rip, &check, timeout, Sleepers::kLeaveAsleep);
  if (!rendezvous) return tl::unexpected(std::move(rendezvous).error());
  for (const SleepingThread& s : rendezvous->sleeping)
    for (std::size_t i = 0; i < ranges.size(); ++i)
      if (ranges[i].contains(s.pc)) in_use[i].store(true, std::memory_order_relaxed);
  for (pid_t tid : rendezvous->unanswered) {
    auto blocked_at = blocked_syscall_address(tid);
    for (std::size_t i = 0; i < ranges.size(); ++i)
      if (!blocked_at || ranges[i].contains(*blocked_at)) in_use[i].store(true, std::memory_order_relaxed);
  }

  std::vector<bool> result(ranges.size());
  for (std::size_t i = 0; i < ranges.size(); ++i) result[i] = in_use[i].load(std::memory_order_relaxed);
  return result;
}

}  // namespace punch::runtime
