// punch::runtime::ForkSafeMutex — a mutex that stays usable in a child after fork.
//
// fork() copies a mutex in whatever state it is: held by a thread that does
// not exist in the child, it would stay locked forever. Every ForkSafeMutex is
// registered; a pthread_atfork handler locks them all before fork (outermost
// rank first, so it follows the order code nests them) and unlocks them in
// both parent and child afterwards, so the child's copies are free and the
// state they protect is consistent. The lock is a futex word taken with raw
// system calls: the fork handlers call nothing a user may have hooked, and
// allocate nothing.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>

namespace punch::runtime {

//! Nesting order of punch's process-wide locks: a lock of a lower rank may be
//! held while taking one of a higher rank, never the other way round.
enum class LockRank {
  kRetiredCode = 0,   //!< Retired JIT code and the patch point changes checked against it (patcher).
  kHooks = 1,         //!< The hook registry (patcher).
  kTransactions = 2,  //!< Commits and reverts of live transactions (patcher).
  kTrapHandler = 3,   //!< Installing the trap handler (patcher).
  kHeap = 4,          //!< A CodeHeap.
  kWriter = 5,        //!< A CodeWriter and the /proc/self/mem descriptor.
  kRendezvous = 6,    //!< visit_other_threads.
  kBranchIndex = 7,   //!< The per-object index of direct branch targets (patcher); nests nothing.
  kSymbols = 8,       //!< The cache of object files read for their symbol tables (function_bounds).
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

}  // namespace punch::runtime
