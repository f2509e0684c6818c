#include <punch/runtime/sync.hpp>

#include <cpuid.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <thread>

#include <punch/runtime/threads.hpp>

#include "fault_seam.hpp"

namespace punch::runtime {
namespace {

enum : int { kUndecided = -1, kUseMembarrier = 0, kUseSignals = 1 };
std::atomic<int> g_method{kUndecided};

long membarrier(int cmd) { return ::syscall(SYS_membarrier, cmd, 0, 0); }

bool register_membarrier() {
  long supported = membarrier(MEMBARRIER_CMD_QUERY);
  return supported >= 0 && (supported & MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE) &&
         membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE) == 0;
}

int decided_method() {
  int m = g_method.load(std::memory_order_acquire);
  if (m != kUndecided) return m;
  // Registering twice is harmless, so a race here needs no lock.
  m = register_membarrier() ? kUseMembarrier : kUseSignals;
  g_method.store(m, std::memory_order_release);
  return m;
}

// Whether the CPU has the SERIALIZE instruction (CPUID.7.0:EDX[14]); 0 unknown, 1 no, 2 yes.
std::atomic<int> g_has_serialize{0};

void serialize_visitor(ucontext_t*, void*) { serialize_this_thread(); }

}  // namespace

std::string_view to_string(SyncMethod method) noexcept {
  return method == SyncMethod::kMembarrier ? "membarrier" : "signals";
}

SyncMethod sync_method() { return decided_method() == kUseMembarrier ? SyncMethod::kMembarrier : SyncMethod::kSignals; }

void serialize_this_thread() noexcept {
  int has = g_has_serialize.load(std::memory_order_relaxed);
  if (has == 0) {  // Benign race: every thread computes the same answer.
    unsigned a = 0, b = 0, c = 0, d = 0;
    has = (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 14))) ? 2 : 1;
    g_has_serialize.store(has, std::memory_order_relaxed);
    return;  // cpuid itself serialized this thread.
  }
  if (has == 2) {
    asm volatile(".byte 0x0f, 0x01, 0xe8" ::: "memory");  // serialize
  } else {
    unsigned a = 0, b = 0, c = 0, d = 0;
    __cpuid(0, a, b, c, d);
    asm volatile("" ::"r"(a), "r"(b), "r"(c), "r"(d) : "memory");
  }
}

Status sync_all_threads(std::chrono::milliseconds timeout) {
  const auto fault = detail::take_fault(testing::FaultPoint::kSync);
  if (fault == testing::FaultKind::kEio) return fail(ErrorCode::kIoError, "sync_all_threads: injected EIO");
  if (fault == testing::FaultKind::kDelay) std::this_thread::sleep_for(detail::kInjectedDelay);
  // An injected EINTR or short write is an interruption: the sync below simply runs.

  serialize_this_thread();
  if (decided_method() == kUseMembarrier) {
    bool reregistered = false;
    for (;;) {
      if (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE) == 0) return {};
      if (errno == EINTR) continue;
      // EPERM: not registered in this process (a child after fork may need it again).
      if (errno == EPERM && !reregistered && register_membarrier()) {
        reregistered = true;
        continue;
      }
      break;  // Refused here (EINVAL, ENOSYS, seccomp): use signals from now on.
    }
    g_method.store(kUseSignals, std::memory_order_release);
  }
  // Every other thread is held (it serializes when released) or asleep in a
  // system call (it has run nothing since the hold began): this thread has
  // serialized itself, and a rendezvous could not be answered anyway.
  if (ThreadHold::held_by_this_thread()) return {};

  auto rendezvous = visit_other_threads(serialize_visitor, nullptr, timeout);
  if (!rendezvous) return tl::unexpected(std::move(rendezvous).error());
  if (!rendezvous->unanswered.empty()) {
    std::string tids;
    for (pid_t tid : rendezvous->unanswered) tids += (tids.empty() ? "" : ", ") + std::to_string(tid);
    return fail(ErrorCode::kTimeout, "sync_all_threads: thread(s) " + tids + " did not serialize within " +
                                         std::to_string(timeout.count()) + " ms (signals blocked?)");
  }
  return {};
}

}  // namespace punch::runtime
