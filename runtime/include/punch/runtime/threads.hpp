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
#include <punch/runtime/code_range.hpp>
#include <punch/runtime/code_writer.hpp>

namespace punch::runtime {

//! Runs inside a signal handler on the visited thread: must be async-signal-safe.
using ThreadVisitor = void (*)(ucontext_t* context, void* arg);

//! A thread asleep in a system call, as /proc/self/task/<tid>/syscall shows
//! it without waking it: where it will resume in user space.
struct SleepingThread {
  pid_t tid = 0;
  std::uintptr_t pc = 0;  //!< The user-space address after its `syscall` instruction.
};

//! The outcome of a rendezvous.
struct Rendezvous {
  std::size_t visited = 0;        //!< Threads whose handler ran the visitor.
  std::vector<pid_t> unanswered;  //!< Threads still alive that did not answer in time (e.g. all signals blocked).
  std::vector<SleepingThread> sleeping;  //!< Threads left asleep (only with Sleepers::kLeaveAsleep).
};

//! What a rendezvous does with a thread that is asleep in a system call.
enum class Sleepers {
  //! Signal it like every other thread. Its call may then fail with EINTR
  //! (poll, epoll_wait, select, nanosleep return EINTR whenever a handler ran).
  kSignal,
  //! Do not signal it: report it in Rendezvous::sleeping with the address it
  //! will resume at. For visitors that only need to know where a thread is.
  kLeaveAsleep,
};

//! Signals every thread of the process except the caller (listed from
//! /proc/self/task; threads that exit meanwhile are skipped), runs `visit` in
//! each one's handler, and waits until all answered or `timeout` passed.
//! Rendezvous are serialized process-wide. The signal used is SIGURG (whose
//! default action is harmless), or SIGRTMIN+5 when the program handles SIGURG,
//! or the number PUNCH_SIGNAL names; its handler is installed once and
//! preserves errno.
Result<Rendezvous> visit_other_threads(ThreadVisitor visit, void* arg, std::chrono::milliseconds timeout,
                                       Sleepers sleepers = Sleepers::kSignal);

//! A system call a thread is blocked in, from /proc/self/task/<tid>/syscall.
struct BlockedSyscall {
  long number = -1;
  std::uintptr_t args[6] = {};
  std::uintptr_t sp = 0;
  std::uintptr_t pc = 0;  //!< Where the thread resumes in user space.
};

//! The system call `tid` is blocked in; kUnprovable when it is running, not
//! in a system call, or unknown. Does not wake or disturb the thread.
Result<BlockedSyscall> blocked_syscall(pid_t tid);

//! blocked_syscall(tid)->pc.
Result<std::uintptr_t> blocked_syscall_address(pid_t tid);

//! Whether a thread blocked in `call` is the parent of a vfork child
//! (vfork, or clone/clone3 with CLONE_VFORK, as posix_spawn uses): the child
//! runs in this process's memory, is not one of its threads, and runs with
//! default signal handlers, so a trap byte it met would kill it.
bool waits_for_vfork_child(const BlockedSyscall& call);

//! Every other thread of the process, held still for a change to code any of
//! them may run: each thread is paused inside its rendezvous signal handler
//! (every signal blocked there) until release(), a thread asleep in a system
//! call included (the call resumes afterwards, as SA_RESTART makes it), but
//! for a sleeper in a call that any handler would make fail with EINTR (poll,
//! epoll_wait, select, nanosleep, sigtimedwait, ...), which is left asleep and
//! listed with the address it will resume at. (A futex wait with a timeout is
//! held: its EINTR is seen only by sem_timedwait and raw futex callers.)
//! A thread that cannot answer (its signals blocked), running or asleep,
//! cannot be held, but for one waiting inside punch's own fork handler,
//! which counts as held without a signal: it runs none of the program's
//! code there, and does not leave until release().
//!
//! While held, no thread can run user code, change its signal mask or start
//! a vfork child; only such a sleeper, woken by the kernel (a timeout, I/O,
//! a signal sent to it), can. A held thread serializes its core when released.
class ThreadHold {
 public:
  //! A thread paused in its handler: its saved context may be read and changed until release().
  struct Held {
    pid_t tid = 0;
    ucontext_t* context = nullptr;
  };

  //! Holds every other thread. Fails with kTimeout, holding none, when within
  //! `timeout` there was no moment at which every running thread answered
  //! (one with its signals blocked is named) and no vfork child shared this
  //! memory. Between tries nothing is held: no thread waits longer than one
  //! try (1 ms at first) behind one that cannot answer. Holds the rendezvous
  //! lock until release().
  static Result<ThreadHold> hold_other_threads(std::chrono::milliseconds timeout);

  ThreadHold() noexcept = default;
  ThreadHold(ThreadHold&& other) noexcept;
  ThreadHold& operator=(ThreadHold&& other) noexcept;
  ThreadHold(const ThreadHold&) = delete;
  ThreadHold& operator=(const ThreadHold&) = delete;
  ~ThreadHold() { release(); }

  std::span<const Held> held() const noexcept { return held_; }
  std::span<const SleepingThread> sleeping() const noexcept { return sleeping_; }

  //! Looks again at every sleeper: one that woke since is held now (signalled
  //! and paused), one still asleep gets its current resume address. Call it
  //! after writing trap bytes: a thread that woke before them may be anywhere.
  Status recheck_sleepers(std::chrono::milliseconds timeout);

  //! Puts the trap byte `trap` (0xCC int3, 0xF4 hlt) over the instruction
  //! each sleeper resumes at, outside `avoid`, so that a sleeper woken while
  //! code changes traps before it runs anything and is held until release()
  //! (which puts the bytes back); then holds those that woke meanwhile.
  //! Needs punch's trap handler installed. A sleeper stays unguarded (as
  //! before: it may wake and run unheld) when it sleeps in a call that swaps
  //! its signal mask, has the trap signal blocked, resumes inside `avoid` or
  //! not right after a `syscall`, or when `writer` does not write through
  //! /proc/self/mem.
  Status guard_sleepers(CodeWriter& writer, std::uint8_t trap, std::span<const CodeRange> avoid,
                        std::chrono::milliseconds timeout);

  //! Whether the calling thread holds the others now.
  static bool held_by_this_thread() noexcept;

  //! Lets every held thread go on (each serializes first). Idempotent.
  void release() noexcept;

 private:
  Status try_hold(int sig, std::chrono::microseconds grace, std::chrono::steady_clock::time_point deadline);

  std::vector<Held> held_;
  std::vector<SleepingThread> sleeping_;
  std::vector<pid_t> woke_;  // recheck_sleepers' lists, reserved before any thread is held.
  std::vector<pid_t> unanswered_;
  std::vector<std::uint8_t> tripwire_fits_;  // Per sleeper: its call lets a tripwire stand where it resumes.
  std::vector<std::uint8_t> guardable_;      // guard_sleepers': may each sleeper take a tripwire (reserved likewise).
  CodeWriter* tripwire_writer_ = nullptr;    // Set while tripwires stand: release() puts their bytes back.
  bool holding_ = false;
};

//! Which of `ranges` another thread may be executing right now, one flag per
//! range: true where some thread's saved rip lies inside, or where a thread
//! that did not answer in time cannot be proven (blocked_syscall_address) to
//! be blocked outside it. Code that no thread can enter any more (its entry
//! jumps are gone and synced) and that is false here is safe to free.
Result<std::vector<bool>> ranges_in_use(std::span<const CodeRange> ranges, std::chrono::milliseconds timeout);

}  // namespace punch::runtime
