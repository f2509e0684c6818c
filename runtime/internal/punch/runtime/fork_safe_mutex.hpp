// punch::runtime::ForkSafeMutex — a mutex that stays usable in a child after fork.
//
// fork() copies a mutex in whatever state it is: held by a thread that does
// not exist in the child, it would stay locked forever. Every ForkSafeMutex is
// registered; a pthread_atfork handler locks them all before fork (outermost
// rank first, so it follows the order code nests them) and unlocks them in
// both parent and child afterwards, so the child's copies are free and the
// state they protect is consistent. The lock is a futex word taken with raw
// system calls: the fork handlers call nothing a user may have hooked, and
// allocate nothing (until the child's callbacks, which run once every lock
// is free).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>

namespace punch::runtime {

//! Nesting order of punch's process-wide locks: a lock of a lower rank may be
//! held while taking one of a higher rank, never the other way round. The
//! runtime names only its own; each layer above names its locks in its own
//! code (the patcher's: patcher/src/lock_ranks.hpp) within these bands:
//!   0-9    outer locks of the layers above, taken before any runtime lock;
//!   10-19  the runtime's locks, below;
//!   20-29  leaf locks of any layer, which nest nothing.
enum class LockRank : std::uint8_t {
  kHeap = 10,        //!< A CodeHeap.
  kWriter = 11,      //!< A CodeWriter and the /proc/self/mem descriptor.
  kRendezvous = 12,  //!< visit_other_threads.
  kSymbols = 21,     //!< The cache of object files read for their symbol tables (function_bounds); a leaf.
  kCodeNames = 22,   //!< The code registry and the files of tools that name code (perf map, jitdump); leaves.
  kDebugInfo = 23,   //!< Unwind info (libgcc registrations, walk_stack's table) and the gdb JIT interface; leaves.
};

//! A std::mutex-compatible lock that is registered with a pthread_atfork
//! handler, so that fork() never copies it in a locked state.

class ForkSafeMutex {
 public:
  explicit ForkSafeMutex(LockRank rank);
  ~ForkSafeMutex();
  ForkSafeMutex(const ForkSafeMutex&) = delete;
  ForkSafeMutex& operator=(const ForkSafeMutex&) = delete;

  void lock() noexcept;
  void unlock() noexcept;
  bool try_lock() noexcept;
  LockRank rank() const noexcept { return rank_; }

  //! The registry's own lock, which is not registered.
  enum Unregistered { kUnregistered };
  explicit ForkSafeMutex(Unregistered) noexcept;

 private:
  bool registered() const noexcept { return !unregistered_; }

  friend struct ForkRegistry;

  std::atomic<std::uint32_t> word_{0};  // 0 free, 1 taken, 2 taken and someone sleeps.
  LockRank rank_;
  bool unregistered_ = false;
  int awaited_ = 0;  // Fork handlers waiting for it without the registry's guard (read under the guard).
};

//! Has `callback` run in every fork child, after the child's ForkSafeMutexes
//! are released (a tool that opens its own file in the child, say). It takes
//! no lock and calls nothing, so a tool can ask when it is first turned on,
//! even while another thread forks (whose child then runs the callback or
//! not, and never hangs), rather than register a pthread_atfork handler of
//! its own while the program loads. The same callback twice is kept once;
//! false when all kMaxForkChildCallbacks slots hold others.
inline constexpr std::size_t kMaxForkChildCallbacks = 4;
bool run_in_fork_children(void (*callback)()) noexcept;

}  // namespace punch::runtime
