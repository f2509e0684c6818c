// punch::runtime threads — run a small visitor on every other thread of the process.
//
// Both the sync fallback (each thread serializes) and the patcher's thread
// fix-up round (each thread checks, and maybe moves, its own saved rip) need
// the same thing: signal every thread, run an async-signal-safe visitor in its
// handler with its saved context, and wait for every answer with a bound.
#pragma once

#include <sys/types.h>
#include <ucontext.h>

#include <chrono>
#include <cstdint>
#include <span>
#include <vector>

#include <punch/result.hpp>

namespace punch::runtime {

//! Runs inside a signal handler on the visited thread: must be async-signal-safe.
using ThreadVisitor = void (*)(ucontext_t* context, void* arg);

//! The outcome of a rendezvous.
struct Rendezvous {
  std::size_t visited = 0;             //!< Threads whose handler ran the visitor.
  std::vector<pid_t> unanswered;       //!< Threads still alive that did not answer in time (e.g. all signals blocked).
};

//! Signals every thread of the process except the caller (listed from
//! /proc/self/task; threads that exit meanwhile are skipped), runs `visit` in
//! each one's handler, and waits until all answered or `timeout` passed.
//! Rendezvous are serialized process-wide. The signal used is a real-time
//! signal (SIGRTMIN+5 unless PUNCH_SIGNAL names another number); its handler
//! is installed once and preserves errno.
Result<Rendezvous> visit_other_threads(ThreadVisitor visit, void* arg,
                                       std::chrono::milliseconds timeout);

//! The user-space address a thread is blocked at in a system call, from
//! /proc/self/task/<tid>/syscall; kUnprovable when it is running or unknown.
Result<std::uintptr_t> blocked_syscall_address(pid_t tid);

//! An address range [begin, end).
struct CodeRange {
  std::uintptr_t begin = 0;
  std::uintptr_t end = 0;
  bool contains(std::uintptr_t address) const noexcept { return address >= begin && address < end; }
};

//! Which of `ranges` another thread may be executing right now, one flag per
//! range: true where some thread's saved rip lies inside, or where a thread
//! that did not answer in time cannot be proven (blocked_syscall_address) to
//! be blocked outside it. Code that no thread can enter any more (its entry
//! jumps are gone and synced) and that is false here is safe to free.
Result<std::vector<bool>> ranges_in_use(std::span<const CodeRange> ranges,
                                        std::chrono::milliseconds timeout);

}  // namespace punch::runtime
