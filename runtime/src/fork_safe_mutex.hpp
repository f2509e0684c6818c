// A mutex that stays usable in a child after fork.
//
// fork() copies a mutex in whatever state it is: held by a thread that does
// not exist in the child, it would stay locked forever. Every ForkSafeMutex is
// registered; a pthread_atfork handler locks them all before fork (outermost
// rank first, so it follows the order code nests them) and unlocks them in
// both parent and child afterwards, so the child's copies are free and the
// state they protect is consistent.
#pragma once

#include <mutex>

namespace punch::runtime::detail {

//! Nesting order of the runtime's locks: a lock of a lower rank may be held
//! while taking one of a higher rank, never the other way round.
enum class LockRank { kHeap = 0, kWriter = 1, kRendezvous = 2 };

class ForkSafeMutex {
 public:
  explicit ForkSafeMutex(LockRank rank);
  ~ForkSafeMutex();
  ForkSafeMutex(const ForkSafeMutex&) = delete;
  ForkSafeMutex& operator=(const ForkSafeMutex&) = delete;

  void lock() { mutex_.lock(); }
  void unlock() { mutex_.unlock(); }
  bool try_lock() { return mutex_.try_lock(); }
  LockRank rank() const noexcept { return rank_; }

 private:
  std::mutex mutex_;
  LockRank rank_;
};

}  // namespace punch::runtime::detail
