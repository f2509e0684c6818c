#include <punch/runtime/fork_safe_mutex.hpp>

#include <pthread.h>

#include <algorithm>
#include <vector>

#include <punch/runtime/raw_syscall.hpp>

#include "parked_threads.hpp"

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

// Every ForkSafeMutex, kept in rank order (outermost first) as they are
// registered, so the fork handlers allocate and sort nothing. The prepare
// handler takes the guard first, and the parent and child handlers release
// it last.
struct ForkRegistry {
  ForkSafeMutex guard{ForkSafeMutex::kUnregistered};
  std::vector<ForkSafeMutex*> members;

  // The prepare handler: the guard, then every member in rank order. It never
  // waits for a member while it holds the guard: the thread holding that
  // member may be constructing another ForkSafeMutex under it (a lock made
  // on first use), which needs the guard before it lets go. So when a member
  // is taken it lets go of everything, waits for that member alone (marked
  // awaited, so it is not destroyed meanwhile), and tries again holding it:
  // a thread that takes the member again at once cannot starve the fork.
  //
  // The forking thread is parked meanwhile (parked_threads.hpp): it often
  // has every signal blocked, and the member it waits for may be held by a
  // change that is holding the other threads still.
  void lock_everything() noexcept {
    const detail::ParkedInPunch parked;
    ForkSafeMutex* held = nullptr;  // The member waited for last, still held.
    for (;;) {
      guard.lock();
      if (held) --held->awaited_;
      std::size_t taken = 0;
      while (taken < members.size() && (members[taken] == held || members[taken]->try_lock())) ++taken;
      if (taken == members.size()) return;
      ForkSafeMutex* busy = members[taken];
      for (std::size_t i = 0; i < taken; ++i)
        if (members[i] != held) members[i]->unlock();
      if (held) held->unlock();
      ++busy->awaited_;
      guard.unlock();
      busy->lock();
      held = busy;
    }
  }

  void unlock_everything() noexcept {
    for (ForkSafeMutex* m : members) m->unlock();
    guard.unlock();
  }
};

namespace {

// Filled in order, never emptied: a fork child reads them without a lock.
std::atomic<void (*)()> g_fork_child_callbacks[kMaxForkChildCallbacks];

ForkRegistry& registry() {
  static ForkRegistry* r = [] {
    auto* created = new ForkRegistry;  // Never destroyed: atfork handlers may run during exit.
    pthread_atfork([] { registry().lock_everything(); }, [] { registry().unlock_everything(); },
                   [] {
                     detail::forget_parked_threads();  // The parent's other threads are not here.
                     registry().unlock_everything();
                     for (const auto& callback : g_fork_child_callbacks)
                       if (auto* run = callback.load(std::memory_order_acquire)) run();
                   });
    return created;
  }();
  return *r;
}

}  // namespace

bool run_in_fork_children(void (*callback)()) noexcept {
  for (auto& slot : g_fork_child_callbacks) {
    void (*seen)() = nullptr;
    if (slot.compare_exchange_strong(seen, callback, std::memory_order_acq_rel) || seen == callback) return true;
  }
  return false;
}

ForkSafeMutex::ForkSafeMutex(Unregistered) noexcept : rank_(LockRank{}), unregistered_(true) {}

ForkSafeMutex::ForkSafeMutex(LockRank rank) : rank_(rank) {
  ForkRegistry& reg = registry();
  std::lock_guard guard(reg.guard);
  // After the last one of a lower or equal rank: the order in which code nests these locks.
  auto after = std::upper_bound(reg.members.begin(), reg.members.end(), rank,
                                [](LockRank r, const ForkSafeMutex* m) { return r < m->rank(); });
  reg.members.insert(after, this);
}

ForkSafeMutex::~ForkSafeMutex() {
  if (!registered()) return;
  ForkRegistry& reg = registry();
  reg.guard.lock();
  while (awaited_ > 0) {  // A fork's prepare handler is about to lock it.
    reg.guard.unlock();
    raw_syscall(SYS_sched_yield);
    reg.guard.lock();
  }
  std::erase(reg.members, this);
  reg.guard.unlock();
}

}  // namespace punch::runtime
