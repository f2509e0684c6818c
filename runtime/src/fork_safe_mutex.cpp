#include <punch/runtime/fork_safe_mutex.hpp>

#include <pthread.h>

#include <algorithm>
#include <vector>

#include <punch/runtime/raw_syscall.hpp>

namespace punch::runtime {

// Three states (Drepper, "Futexes Are Tricky"): 0 free, 1 taken, 2 taken
// with sleepers. Raw system calls only: the fork handlers lock every one of
// these while the thread that forks may have every signal blocked, and a
// user may have hooked libc's pthread_mutex_lock or syscall().
void ForkSafeMutex::lock() noexcept {
  std::uint32_t seen = 0;
  if (word_.compare_exchange_strong(seen, 1, std::memory_order_acquire)) return;
  if (seen != 2) seen = word_.exchange(2, std::memory_order_acquire);
  while (seen != 0) {
    raw_syscall(SYS_futex, reinterpret_cast<long>(&word_), FUTEX_WAIT_PRIVATE, 2, 0);
    seen = word_.exchange(2, std::memory_order_acquire);
  }
}

bool ForkSafeMutex::try_lock() noexcept {
  std::uint32_t seen = 0;
  return word_.compare_exchange_strong(seen, 1, std::memory_order_acquire);
}

void ForkSafeMutex::unlock() noexcept {
  if (word_.exchange(0, std::memory_order_release) == 2)
    raw_syscall(SYS_futex, reinterpret_cast<long>(&word_), FUTEX_WAKE_PRIVATE, 1);
}

namespace {

// Every ForkSafeMutex, kept in rank order (outermost first) as they are
// registered, so the fork handlers allocate and sort nothing. The registry
// is locked first by the prepare handler and released last.
struct Registry {
  ForkSafeMutex guard{ForkSafeMutex::kUnregistered};
  std::vector<ForkSafeMutex*> members;
};

// The prepare handler: the guard, then every member in rank order. It never
// waits for a member while it holds the guard: the thread holding that
// member may be constructing another ForkSafeMutex under it (a lock made on
// first use), which needs the guard before it lets go. So a member that is
// taken makes it let go of everything, yield, and start again.
void lock_everything(Registry& reg) noexcept {
  for (;;) {
    reg.guard.lock();
    std::size_t taken = 0;
    while (taken < reg.members.size() && reg.members[taken]->try_lock()) ++taken;
    if (taken == reg.members.size()) return;
    while (taken > 0) reg.members[--taken]->unlock();
    reg.guard.unlock();
    raw_syscall(SYS_sched_yield);
  }
}

Registry& registry() {
  static Registry* r = [] {
    auto* created = new Registry;  // Never destroyed: atfork handlers may run during exit.
    pthread_atfork(
        [] { lock_everything(registry()); },
        [] {
          Registry& reg = registry();
          for (ForkSafeMutex* m : reg.members) m->unlock();
          reg.guard.unlock();
        },
        [] {
          Registry& reg = registry();
          for (ForkSafeMutex* m : reg.members) m->unlock();
          reg.guard.unlock();
        });
    return created;
  }();
  return *r;
}

}  // namespace

ForkSafeMutex::ForkSafeMutex(Unregistered) noexcept : rank_(LockRank::kHooks), unregistered_(true) {}

ForkSafeMutex::ForkSafeMutex(LockRank rank) : rank_(rank) {
  Registry& reg = registry();
  std::lock_guard guard(reg.guard);
  // After the last one of a lower or equal rank: the order in which code nests these locks.
  auto after = std::upper_bound(reg.members.begin(), reg.members.end(), rank,
                                [](LockRank r, const ForkSafeMutex* m) { return r < m->rank(); });
  reg.members.insert(after, this);
}

ForkSafeMutex::~ForkSafeMutex() {
  if (registered()) {
    Registry& reg = registry();
    std::lock_guard guard(reg.guard);
    std::erase(reg.members, this);
  }
}

}  // namespace punch::runtime
