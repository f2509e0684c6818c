#include <punch/runtime/sync.hpp>

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <string>
#include <thread>

#include <punch/runtime/raw_syscall.hpp>
#include <punch/runtime/threads.hpp>

#include "fault_seam.hpp"

namespace punch::runtime {
namespace {

enum : int { kUndecided = -1, kUseMembarrier = 0, kUseSignals = 1 };
std::atomic<int> g_method{kUndecided};

// Raw: a change may be under way, with a tripwire over libc's syscall() (threads.cpp).
long membarrier(int cmd) { return raw_syscall(SYS_membarrier, cmd, 0, 0); }

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

// Whether this kernel's release (uname) is `major`.`minor` or later.
bool kernel_at_least(int major, int minor) {
  struct utsname name;
  if (::uname(&name) != 0) return false;
  const char* p = name.release;
  const char* end = p + std::strlen(p);
  int found_major = 0, found_minor = 0;
  auto [after_major, major_error] = std::from_chars(p, end, found_major);
  if (major_error != std::errc() || after_major == end || *after_major != '.') return false;
  if (std::from_chars(after_major + 1, end, found_minor).ec != std::errc()) return false;
  return found_major > major || (found_major == major && found_minor >= minor);
}

// 0 unknown, 1 no, 2 yes.
std::atomic<int> g_serializes_caller{0};

// One membarrier SYNC_CORE, retried on EINTR, registered again once on EPERM
// (a child after fork may need it). False when the kernel refuses it.
bool membarrier_sync_core() {
  bool reregistered = false;
  for (;;) {
    const long result = membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE);
    if (result == 0) return true;
    if (result == -EINTR) continue;
    if (result == -EPERM && !reregistered && register_membarrier()) {
      reregistered = true;
      continue;
    }
    return false;  // EINVAL, ENOSYS, seccomp.
  }
}

void serialize_visitor(ucontext_t*, void*) { serialize_this_thread(); }

}  // namespace

std::string_view to_string(SyncMethod method) noexcept {
  return method == SyncMethod::kMembarrier ? "membarrier" : "signals";
}

SyncMethod sync_method() { return decided_method() == kUseMembarrier ? SyncMethod::kMembarrier : SyncMethod::kSignals; }

bool membarrier_serializes_caller() {
  int known = g_serializes_caller.load(std::memory_order_relaxed);
  if (known == 0) {  // Every thread computes the same answer.
    known = kernel_at_least(5, 10) ? 2 : 1;
    g_serializes_caller.store(known, std::memory_order_relaxed);
  }
  return known == 2;
}

Status sync_all_threads(std::chrono::milliseconds timeout) {
  const auto fault = detail::take_fault(testing::FaultPoint::kSync);
  if (fault == testing::FaultKind::kEio) {
    serialize_this_thread();  // The caller serializes on every path.
    return fail(ErrorCode::kIoError, "sync_all_threads: injected EIO");
  }
  if (fault == testing::FaultKind::kDelay) std::this_thread::sleep_for(detail::kInjectedDelay);
  // An injected EINTR or short write is an interruption: the sync below simply runs.

  if (decided_method() == kUseMembarrier) {
    // Before 5.10 the kernel skips the caller's CPU. Serializing it before the
    // call also covers a sibling thread that is moved onto this CPU meanwhile
    // (see docs/design.md).
    if (!membarrier_serializes_caller()) serialize_this_thread();
    if (membarrier_sync_core()) return {};
    g_method.store(kUseSignals, std::memory_order_release);  // Refused here: signals from now on.
  }
  serialize_this_thread();
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
