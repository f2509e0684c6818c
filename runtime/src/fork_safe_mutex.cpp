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

bool ForkSafeMutex::try_lock_or_mark_contended() noexcept {
  return try_lock() || word_.exchange(2, std::memory_order_acquire) == 0;  // 0: it was free, now ours.
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

// The prepare handler's locking: the registry, then every member in rank
// order. It never sleeps on a member while holding the registry: the thread
// holding that member may be waiting for the registry itself (constructing a
// ForkSafeMutex: the global CodeWriter is made on first use, inside a hook's
// commit for one), and the fork would never return. Instead it marks the
// member contended, lets go of everything, sleeps until the member's unlock
// wakes it (at most 1 ms: the member may be destroyed meanwhile, and the
// futex wait only reads its word in the kernel), and starts over.
void lock_all(Registry& reg) {
  for (;;) {
    reg.guard.lock();
    std::size_t taken = 0;
    while (taken < reg.members.size() && reg.members[taken]->try_lock_or_mark_contended()) ++taken;
    if (taken == reg.members.size()) return;
    const std::atomic<std::uint32_t>& busy = reg.members[taken]->futex_word();
    while (taken > 0) reg.members[--taken]->unlock();
    reg.guard.unlock();
    futex_wait(busy, 2, 1'000'000);
  }
}

Registry& registry() {
  static Registry* r = [] {
    auto* created = new Registry;  // Never destroyed: atfork handlers may run during exit.
    pthread_atfork(
        [] { lock_all(registry()); },
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
