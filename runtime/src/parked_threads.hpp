// Threads parked inside punch's own code, which a hold counts as held.
//
// A thread that forks runs punch's fork handler (it takes every punch lock),
// often with every signal blocked, as programs block them around fork. When
// a lock is taken by a change that is holding the other threads still, the
// forking thread waits for it and cannot answer the hold signal: the change
// would wait for the forking thread, the forking thread for the change,
// until the change gave up (git under punch_trace ran 4.9x slower). While it
// waits there it runs only punch's code, which no change touches, so it is
// as good as held: it parks itself in a slot, a hold claims the parked
// threads instead of signalling them, and a claimed thread that is done
// waiting stays until the hold is released, then serializes, as a held
// thread does.
#pragma once

#include <sys/types.h>

#include <vector>

namespace punch::runtime::detail {

//! Parks the calling thread for its lifetime (see above). When every slot is
//! taken the thread is not parked, and holds treat it as before.
//! Async-signal-safe; raw system calls only (libc functions may be hooked).
class ParkedInPunch {
 public:
  ParkedInPunch() noexcept;
  ~ParkedInPunch();
  ParkedInPunch(const ParkedInPunch&) = delete;
  ParkedInPunch& operator=(const ParkedInPunch&) = delete;

 private:
  int slot_ = -1;
};

//! For a hold, under the rendezvous lock: claims every parked thread (each
//! stays parked until release_parked_threads()) and appends their tids to `tids`.
void claim_parked_threads(std::vector<pid_t>& tids);

//! Lets every claimed thread leave its slot (when the hold is released).
void release_parked_threads() noexcept;

//! In a fork child: the slots of the parent's other threads are free.
void forget_parked_threads() noexcept;

}  // namespace punch::runtime::detail
