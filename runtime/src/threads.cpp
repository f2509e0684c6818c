// Rendezvous with every other thread through a real-time signal.
//
// Each rendezvous lists the threads in a fixed array of slots, one 64-bit word
// each: tid in the high half, state in the low half. A handler claims its
// slot with a compare-exchange of (its tid, pending) -> (its tid, running),
// runs the visitor, and marks the slot done. The coordinator gives up on
// slots still pending at the deadline by moving them to abandoned with the
// same compare-exchange, so a late signal (a thread that had it blocked)
// finds nothing to claim and returns. A slot being visited is always waited
// for, so the visitor's argument outlives every use of it.
//
// A hold (ThreadHold) is a rendezvous whose handler does not return: it
// publishes its saved context, marks its slot held, and sleeps on a futex
// until the coordinator releases every held thread at once.
//
// A thread asleep in a system call can be left asleep: /proc/self/task/<tid>/
// syscall tells where it will resume without waking it, and a signal would
// make its poll, epoll_wait, select or nanosleep fail with EINTR whatever
// SA_RESTART says (the kernel restarts those only when no handler ran).
#include <punch/runtime/threads.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include <punch/runtime/fork_safe_mutex.hpp>
#include <punch/runtime/raw_syscall.hpp>
#include <punch/runtime/safe_read.hpp>
#include <punch/runtime/serialize.hpp>
#include <punch/runtime/sync.hpp>
#include <punch/runtime/woken_sleepers.hpp>

#include "parked_threads.hpp"
#include "proc_self_fd.hpp"
#include "sleeper_tripwires.hpp"

namespace punch::runtime {
namespace {

enum SlotState : std::uint32_t { kPending = 1, kRunning = 2, kDone = 3, kAbandoned = 4, kHeld = 5 };

constexpr std::size_t kMaxThreads = 8192;

std::atomic<std::uint64_t> g_slots[kMaxThreads];
std::atomic<ucontext_t*> g_held_contexts[kMaxThreads];  // A held thread's saved context, by slot.
std::atomic<std::size_t> g_slot_count{0};
std::atomic<ThreadVisitor> g_visit{nullptr};
std::atomic<void*> g_arg{nullptr};
std::atomic<bool> g_holding{false};             // This round holds threads instead of visiting them.
std::atomic<pid_t> g_hold_owner{0};             // The thread that holds the others, while it does.
std::atomic<std::uint32_t> g_released{0};       // Futex word of held threads: 1 once they may go on.
std::atomic<std::uint32_t> g_answers{0};        // Futex word: bumped by every answer.
std::atomic<bool> g_coordinator_sleeps{false};  // Answers wake the futex only then (a wake is a syscall).
// Sleepers caught by their tripwire (catch_woken_sleeper) and held outside the slots.
std::atomic<pid_t> g_caught[kMaxThreads];
std::atomic<std::size_t> g_caught_count{0};
std::atomic<std::uint32_t> g_catching{0};  // Threads inside catch_woken_sleeper: release() waits for them.

constexpr std::uint64_t slot_word(pid_t tid, SlotState state) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(tid)) << 32) | state;
}
constexpr SlotState slot_state(std::uint64_t word) { return static_cast<SlotState>(word & 0xffffffffu); }
constexpr pid_t slot_tid(std::uint64_t word) { return static_cast<pid_t>(word >> 32); }

void answer() noexcept {
  g_answers.fetch_add(1, std::memory_order_seq_cst);
  if (g_coordinator_sleeps.load(std::memory_order_seq_cst)) futex_wake_all(g_answers);
}

// CPUs online, read while the program loads (a rendezvous spins only when
// every thread it waits for could have a CPU of its own).
const std::size_t g_online_cpus = [] {
  const long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<std::size_t>(n) : std::size_t{1};
}();

// Held in the handler: the slot says so, then wait until released.
//
// When every held thread and the holder can each have a CPU, spin first: a
// change takes tens of microseconds, and a thread that sleeps leaves its CPU
// idle, which in a VM is a halted vCPU that the release must wake with an
// IPI (release() waits for every held thread to leave its slot). Sleeping at
// once cost a hook cycle with one busy thread a millisecond on a KVM guest.
// With more threads than CPUs the holder needs the CPUs: sleep at once.
// The clock is read with the system call, not libc's clock_gettime: the
// change may be rewriting that very function (a program that hooks time),
// and a held thread, every signal blocked, must run none of the program's code.
void stay_held(std::size_t slot, pid_t me, ucontext_t* context) noexcept {
  g_held_contexts[slot].store(context, std::memory_order_release);
  g_slots[slot].store(slot_word(me, kHeld), std::memory_order_release);
  answer();
  if (g_slot_count.load(std::memory_order_acquire) + 1 <= g_online_cpus) {
    const std::int64_t spin_until = raw_monotonic_ns() + 500'000;
    for (unsigned i = 1; g_released.load(std::memory_order_acquire) == 0; ++i) {
      __builtin_ia32_pause();
      if (i % 256 == 0 && raw_monotonic_ns() >= spin_until) break;
    }
  }
  while (g_released.load(std::memory_order_acquire) == 0) futex_wait(g_released, 0, 100'000'000);
  serialize_this_thread();  // Code may have changed while we were held.
}

// Async-signal-safe: atomics and raw system calls only (see raw_syscall.hpp).
void on_rendezvous_signal(int, siginfo_t*, void* context) {
  const int saved_errno = errno;  // A visitor may touch it.
  const pid_t me = raw_gettid();
  const std::size_t count = g_slot_count.load(std::memory_order_acquire);
  for (std::size_t i = 0; i < count; ++i) {
    std::uint64_t expected = slot_word(me, kPending);
    if (g_slots[i].compare_exchange_strong(expected, slot_word(me, kRunning), std::memory_order_acq_rel)) {
      if (g_holding.load(std::memory_order_acquire)) {
        stay_held(i, me, static_cast<ucontext_t*>(context));
      } else {
        ThreadVisitor visit = g_visit.load(std::memory_order_acquire);
        visit(static_cast<ucontext_t*>(context), g_arg.load(std::memory_order_acquire));
      }
      g_slots[i].store(slot_word(me, kDone), std::memory_order_release);
      answer();
      break;
    }
  }
  errno = saved_errno;
}

// Whether the program already handles `sig` (ignoring it or leaving the default is not handling it).
Result<bool> handled_by_the_program(int sig) {
  struct sigaction old {};
  if (::sigaction(sig, nullptr, &old) != 0)
    return fail(ErrorCode::kIoError, "sigaction(" + std::to_string(sig) + "): " + std::strerror(errno));
  return (old.sa_flags & SA_SIGINFO) ? old.sa_sigaction != nullptr
                                     : (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN);
}

// The signal number, with its handler installed (once per process).
//
// Its default action must be harmless. A thread may enter execve just as the
// signal is sent to it; the signal then stays pending into the new program,
// where every handler is back at its default: a real-time signal would kill
// the new program, SIGURG is ignored. So SIGURG, unless the program handles it
// already; then SIGRTMIN+5, which leaves that race open (docs/design.md).
Result<int> rendezvous_signal() {
  static const Result<int> installed = []() -> Result<int> {
    std::vector<int> candidates{SIGURG, SIGRTMIN + 5};
    if (const char* env = std::getenv("PUNCH_SIGNAL"); env && *env) {
      char* end = nullptr;
      long n = std::strtol(env, &end, 10);
      if (*end != '\0' || n < 1 || n > SIGRTMAX || n == SIGKILL || n == SIGSTOP)
        return fail(ErrorCode::kInvalidArgument, "PUNCH_SIGNAL=" + std::string(env) + ": not a usable signal number");
      candidates = {static_cast<int>(n)};
    }
    std::string taken;
    for (int sig : candidates) {
      auto handled = handled_by_the_program(sig);
      if (!handled) return tl::unexpected(std::move(handled).error());
      if (*handled) {
        taken += (taken.empty() ? "signal " : " and ") + std::to_string(sig);
        continue;
      }
      struct sigaction sa {};
      sa.sa_sigaction = on_rendezvous_signal;
      sa.sa_flags = SA_SIGINFO | SA_RESTART;  // Interrupted system calls resume.
      sigfillset(&sa.sa_mask);
      if (::sigaction(sig, &sa, nullptr) != 0)
        return fail(ErrorCode::kIoError, "sigaction(" + std::to_string(sig) + "): " + std::strerror(errno));
      return sig;
    }
    return fail(ErrorCode::kConflict, taken + " already handled by the program; choose a free one with PUNCH_SIGNAL");
  }();
  return installed;
}

ForkSafeMutex& rendezvous_mutex() {
  static auto* m = new ForkSafeMutex(LockRank::kRendezvous);  // Never destroyed.
  return *m;
}
// Built while the program loads: a fork during the first rendezvous_mutex() call
// would leave the child's copy of the static's initialization guard taken.
[[maybe_unused]] const bool g_rendezvous_mutex_built = (static_cast<void>(rendezvous_mutex()), true);

// Kept open (reopened in a fork child, like /proc/self/mem) and read again
// from its start by each rendezvous, under rendezvous_mutex(): opening and
// closing it were a third of an idle rendezvous.
constinit detail::ProcSelfFd g_task_dir{"/proc/self/task", O_RDONLY | O_DIRECTORY};

// Every thread of the process but the caller. Call under rendezvous_mutex().
Result<std::vector<pid_t>> other_threads() {
  const int fd = g_task_dir.get();
  if (fd < 0) return fail(ErrorCode::kIoError, std::string("/proc/self/task: ") + std::strerror(-fd));
  if (::lseek(fd, 0, SEEK_SET) != 0)
    return fail(ErrorCode::kIoError, std::string("/proc/self/task: rewinding: ") + std::strerror(errno));
  const pid_t me = raw_gettid();
  std::vector<pid_t> tids;
  alignas(dirent64) char buffer[4096];
  for (;;) {
    const ssize_t n = ::getdents64(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(ErrorCode::kIoError, std::string("/proc/self/task: ") + std::strerror(errno));
    if (n == 0) break;
    for (ssize_t offset = 0; offset < n;) {
      const auto* entry = reinterpret_cast<const dirent64*>(buffer + offset);
      const pid_t tid = static_cast<pid_t>(std::atoi(entry->d_name));
      if (tid > 0 && tid != me) tids.push_back(tid);
      offset += entry->d_reclen;
    }
  }
  if (tids.size() > kMaxThreads)
    return fail(ErrorCode::kUnsupported, std::to_string(tids.size()) + " other threads, more than the " +
                                             std::to_string(kMaxThreads) + " a rendezvous supports");
  return tids;
}

// Reads /proc/self/task/<tid>/<file> (through the kept task directory) into
// `text`, NUL-terminated: 0, or the errno (ENODATA when empty). Allocates
// nothing: it runs while threads are held, and a held thread may be inside
// malloc holding the lock of an arena this thread shares. Its system calls
// are raw, as are all the holder's while it holds: a libc wrapper may be
// where a sleeper resumes, under a tripwire (sleeper_tripwires.hpp).
int read_task_text(pid_t tid, const char* file, char* text, std::size_t size) noexcept {
  const int dir = g_task_dir.get();
  if (dir < 0) return -dir;
  char relative[64];
  std::snprintf(relative, sizeof relative, "%d/%s", static_cast<int>(tid), file);
  const long fd = raw_syscall(SYS_openat, dir, reinterpret_cast<long>(relative), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return static_cast<int>(-fd);
  long n;
  do n = raw_syscall(SYS_read, fd, reinterpret_cast<long>(text), static_cast<long>(size - 1));
  while (n == -EINTR);
  const int error = n < 0 ? static_cast<int>(-n) : ENODATA;
  raw_syscall(SYS_close, fd);
  if (n <= 0) return error;
  text[n] = '\0';
  return 0;
}

// read_task_text with an error naming the file.
Status read_task_file(pid_t tid, const char* file, char* text, std::size_t size) {
  if (const int error = read_task_text(tid, file, text, size); error != 0)
    return fail(ErrorCode::kUnprovable, "/proc/self/task/" + std::to_string(tid) + "/" + file + ": " +
                                            (error == ENODATA ? "empty" : std::strerror(error)));
  return {};
}

// What /proc/self/task/<tid>/syscall says: "running", "-1 <sp> <pc>"
// (blocked, not in a system call), or "<nr> <6 args> <sp> <pc>". Fills `call`
// when blocked in one; `line` keeps the text. Allocates nothing.
enum class CallState { kBlocked, kRunning, kNotInCall, kUnreadable, kUnparsable };
CallState read_blocked_syscall(pid_t tid, BlockedSyscall& call, char (&line)[512]) noexcept {
  if (read_task_text(tid, "syscall", line, sizeof line) != 0) return CallState::kUnreadable;
  if (std::strncmp(line, "running", 7) == 0) return CallState::kRunning;
  char* p = line;
  call.number = std::strtol(p, &p, 10);
  if (call.number < 0) return CallState::kNotInCall;
  std::uintptr_t fields[8] = {};
  for (std::uintptr_t& f : fields) {
    char* end = nullptr;
    f = std::strtoull(p, &end, 16);
    if (end == p) return CallState::kUnparsable;
    p = end;
  }
  std::copy(fields, fields + 6, call.args);
  call.sp = fields[6];
  call.pc = fields[7];
  return CallState::kBlocked;
}

bool thread_alive(pid_t tid) { return raw_syscall(SYS_tgkill, detail::current_pid(), tid, 0) != -ESRCH; }

// Publishes slots [first, first+tids.size()) as pending and signals each
// thread; a thread that cannot be signalled is abandoned at once (and listed
// in `unanswered` unless it exited).
void signal_threads(std::span<const pid_t> tids, std::size_t first, int sig, std::vector<pid_t>& unanswered) {
  for (std::size_t i = 0; i < tids.size(); ++i) {
    g_held_contexts[first + i].store(nullptr, std::memory_order_relaxed);
    g_slots[first + i].store(slot_word(tids[i], kPending), std::memory_order_relaxed);
  }
  g_slot_count.store(first + tids.size(), std::memory_order_release);
  const pid_t pid = detail::current_pid();
  for (std::size_t i = 0; i < tids.size(); ++i) {
    const long sent = raw_syscall(SYS_tgkill, pid, tids[i], sig);
    if (sent == 0) continue;
    const int err = static_cast<int>(-sent);
    std::uint64_t expected = slot_word(tids[i], kPending);
    if (g_slots[first + i].compare_exchange_strong(expected, slot_word(tids[i], kAbandoned)) && err != ESRCH)
      unanswered.push_back(tids[i]);  // Alive but cannot be signalled (queue full).
  }
}

// Waits until no slot in [first, end) is pending or being visited, or the
// deadline passed. A slot whose thread exited meanwhile is abandoned.
//
// When every thread waited for can run on a CPU of its own beside this one,
// answers come within microseconds: spin for them first (sleeping would add
// a wake-up, an IPI in a VM, to every round). With more threads than CPUs
// the ones waiting for a CPU need this one: sleep at once (a spin, even a
// yielding one, cost the soak four fifths of its patch rate).
void await_answers(std::size_t first, std::size_t end, std::chrono::steady_clock::time_point deadline) {
  const auto start = std::chrono::steady_clock::now();
  const bool room_for_all = end - first + 1 <= g_online_cpus;
  const auto spin_until = room_for_all ? start + std::chrono::microseconds(50) : start;
  for (;;) {
    const std::uint32_t seen = g_answers.load(std::memory_order_seq_cst);
    const auto now = std::chrono::steady_clock::now();
    const bool spinning = now < spin_until;
    bool waiting = false;
    for (std::size_t i = first; i < end; ++i) {
      std::uint64_t word = g_slots[i].load(std::memory_order_acquire);
      if (slot_state(word) == kRunning) waiting = true;
      if (slot_state(word) != kPending) continue;
      if (!spinning && !thread_alive(slot_tid(word))) {  // Exited before answering: nothing left to visit.
        g_slots[i].compare_exchange_strong(word, slot_word(slot_tid(word), kAbandoned));
        continue;
      }
      waiting = true;
    }
    if (!waiting || now >= deadline) return;
    if (spinning) {
      __builtin_ia32_pause();
      continue;
    }
    // Announce the sleep, then sleep only if no answer came since `seen`
    // (an answer that missed the announcement bumped the word before it).
    g_coordinator_sleeps.store(true, std::memory_order_seq_cst);
    if (g_answers.load(std::memory_order_seq_cst) == seen)
      futex_wait(g_answers, seen, 1000000);  // 1 ms, then look for exited threads again.
    g_coordinator_sleeps.store(false, std::memory_order_seq_cst);
  }
}

// Gives up on slots of [first, end) still pending (listing live ones in
// `unanswered`) and waits out visits in progress; returns how many answered.
std::size_t close_slots(std::size_t first, std::size_t end, std::vector<pid_t>& unanswered) {
  std::size_t answered = 0;
  for (std::size_t i = first; i < end; ++i) {
    std::uint64_t word = g_slots[i].load(std::memory_order_acquire);
    while (slot_state(word) == kPending || slot_state(word) == kRunning) {
      if (slot_state(word) == kPending &&
          g_slots[i].compare_exchange_strong(word, slot_word(slot_tid(word), kAbandoned))) {
        if (thread_alive(slot_tid(word))) unanswered.push_back(slot_tid(word));
        break;
      }
      if (slot_state(word) == kRunning) ::sched_yield();
      word = g_slots[i].load(std::memory_order_acquire);
    }
    if (slot_state(word) == kDone || slot_state(word) == kHeld) ++answered;
  }
  return answered;
}

// Whether thread `tid` has `sig` blocked (SigBlk of its status); unreadable counts as blocked.
bool blocks_signal(pid_t tid, int sig) {
  char text[4096];
  if (read_task_text(tid, "status", text, sizeof text) != 0) return true;
  const char* field = std::strstr(text, "\nSigBlk:");
  if (field == nullptr) return true;
  const unsigned long long mask = std::strtoull(field + 8, nullptr, 16);
  return ((mask >> (sig - 1)) & 1) != 0;
}

enum class Stragglers { kNone, kWillAnswer, kMayNever };

// The threads of slots [first, end) that have not answered yet: none, all
// with `sig` deliverable (each answers once it runs), or some with it blocked.
Stragglers stragglers(std::size_t first, std::size_t end, int sig) {
  Stragglers result = Stragglers::kNone;
  for (std::size_t i = first; i < end; ++i) {
    const std::uint64_t word = g_slots[i].load(std::memory_order_acquire);
    if (slot_state(word) != kPending && slot_state(word) != kRunning) continue;
    if (slot_state(word) == kPending && blocks_signal(slot_tid(word), sig) && thread_alive(slot_tid(word)))
      return Stragglers::kMayNever;
    result = Stragglers::kWillAnswer;
  }
  return result;
}

// Signals `tids` into slots from `first` on, waits for them, and adds the
// ones now held to `held`; the rest to `unanswered`. A thread that has not
// answered within `grace` is waited for until `deadline` while it has the
// signal deliverable: it answers once it runs, and on a loaded host it may
// wait milliseconds for a CPU (giving up after a grace period cost a hook
// cycle with one busy thread a millisecond and a retry). One with the
// signal blocked may never answer: the wait ends after `grace`.
Status hold_signalled(std::span<const pid_t> tids, std::size_t first, int sig, std::chrono::microseconds grace,
                      std::chrono::steady_clock::time_point deadline, std::vector<ThreadHold::Held>& held,
                      std::vector<pid_t>& unanswered) {
  if (first + tids.size() > kMaxThreads)
    return fail(ErrorCode::kUnsupported,
                "holding threads: more than the " + std::to_string(kMaxThreads) + " supported");
  const std::size_t end = first + tids.size();
  held.reserve(held.size() + tids.size());  // No allocation once threads are held (see read_task_file).
  unanswered.reserve(unanswered.size() + tids.size());
  signal_threads(tids, first, sig, unanswered);
  for (;;) {
    await_answers(first, end, std::min(deadline, std::chrono::steady_clock::now() + grace));
    if (std::chrono::steady_clock::now() >= deadline || stragglers(first, end, sig) != Stragglers::kWillAnswer) break;
  }
  close_slots(first, end, unanswered);
  for (std::size_t i = first; i < first + tids.size(); ++i) {
    const std::uint64_t word = g_slots[i].load(std::memory_order_acquire);
    if (slot_state(word) == kHeld) held.push_back({slot_tid(word), g_held_contexts[i].load(std::memory_order_acquire)});
  }
  return {};
}

bool tripwire_fits(const BlockedSyscall& call) noexcept;

// Splits `tids` into threads asleep in a system call that `leave_asleep`
// accepts (not to be signalled) and the rest. Sets `vfork_parent` to a
// thread waiting for a vfork child, and adds to `fits`, for each sleeper,
// whether its call lets a tripwire stand where it resumes (tripwire_fits).
template <class LeaveAsleep>
void sort_sleepers(const std::vector<pid_t>& tids, std::vector<pid_t>& awake, std::vector<SleepingThread>& sleeping,
                   LeaveAsleep leave_asleep, pid_t* vfork_parent = nullptr, std::vector<std::uint8_t>* fits = nullptr) {
  for (pid_t tid : tids) {
    BlockedSyscall call;
    char line[512];
    const bool blocked = read_blocked_syscall(tid, call, line) == CallState::kBlocked;
    if (blocked && vfork_parent && waits_for_vfork_child(call)) *vfork_parent = tid;
    if (blocked && leave_asleep(call)) {
      sleeping.push_back({tid, call.pc});
      if (fits) fits->push_back(tripwire_fits(call));
    } else {
      awake.push_back(tid);
    }
  }
}

// Whether a thread asleep in `call` may be left asleep during a hold:
// a call that our handler (SA_RESTART) would make fail with EINTR, as
// signal(7) lists the calls never restarted after a handler. A thread asleep
// in any other call (a futex wait, wait4, read, ...) is held like a running
// one, and its call resumes. A sleeper left asleep that the kernel wakes
// during the change runs unheld, so the list is kept to the calls a program
// sees fail: futex waits with a timeout (they fail with EINTR too) are held,
// since glibc's users of them (pthread_cond_timedwait, timed locks) wait
// again, and Python's GIL waiter, woken by its 5 ms timeout during a change,
// took the GIL and vforked a child that met a trap byte (real_programs).
// (Leaving private futex waiters asleep too, since "only a held thread can
// wake them", let a worker with every signal blocked meet a trap byte within
// milliseconds in BlockedSignals.AWorker...: something woke it during the
// change.)
bool may_stay_asleep(const BlockedSyscall& call) {
  // The calls grouped as signal(7) lists them.
  // clang-format off
  switch (call.number) {
    case SYS_poll: case SYS_ppoll: case SYS_select: case SYS_pselect6:
    case SYS_epoll_wait: case SYS_epoll_pwait:
    case SYS_nanosleep: case SYS_clock_nanosleep: case SYS_pause: case SYS_rt_sigsuspend: case SYS_rt_sigtimedwait:
    case SYS_io_getevents: case SYS_io_pgetevents: case SYS_semop: case SYS_semtimedop:
    case SYS_msgrcv: case SYS_msgsnd: case SYS_mq_timedreceive: case SYS_mq_timedsend: case SYS_io_uring_enter:
#ifdef SYS_epoll_pwait2
    case SYS_epoll_pwait2:
#endif
#ifdef SYS_futex_waitv
    case SYS_futex_waitv:
#endif
      return true;
    default:
      return false;
  }
  // clang-format on
}

// Whether a thread was caught by its tripwire in this hold (catch_woken_sleeper).
bool caught(pid_t tid) noexcept {
  const std::size_t count = std::min(g_caught_count.load(std::memory_order_seq_cst), kMaxThreads);
  for (std::size_t i = 0; i < count; ++i) {
    pid_t t;
    while ((t = g_caught[i].load(std::memory_order_acquire)) == 0) ::sched_yield();  // Counted, tid on its way.
    if (t == tid) return true;
  }
  return false;
}

// Whether `call` swaps in a signal mask of its own for its duration: the mask
// it returns to is then unknown (/proc shows the temporary one).
bool swaps_signal_mask(const BlockedSyscall& call) {
  switch (call.number) {
    case SYS_rt_sigsuspend: return true;
    case SYS_ppoll: return call.args[3] != 0;
    case SYS_pselect6: return call.args[5] != 0;
    case SYS_epoll_pwait: return call.args[4] != 0;
#ifdef SYS_epoll_pwait2
    case SYS_epoll_pwait2: return call.args[4] != 0;
#endif
    case SYS_io_pgetevents: return call.args[5] != 0;
    default: return false;
  }
}

// Whether a tripwire may stand where a thread asleep in `call` resumes: right
// after a `syscall` instruction, in a call it may be left asleep in and that
// returns to the thread's own signal mask (which may_guard reads).
bool tripwire_fits(const BlockedSyscall& call) noexcept {
  std::uint8_t before[2] = {};
  return may_stay_asleep(call) && !swaps_signal_mask(call) && safe_read_some(call.pc - 2, before) == 2 &&
         before[0] == 0x0f && before[1] == 0x05;
}

// Whether sleeper `tid`, whose call lets a tripwire stand at `pc` (`fits`),
// can be guarded by one: `pc` is outside every range being changed, and the
// thread has `trap_signal` deliverable (a trap it blocked would kill it).
bool may_guard(pid_t tid, std::uintptr_t pc, bool fits, int trap_signal, std::span<const CodeRange> avoid) noexcept {
  if (!fits) return false;
  for (const CodeRange& r : avoid)
    if (r.contains(pc)) return false;
  return !blocks_signal(tid, trap_signal);
}

// Holds a thread that met a tripwire: it answers a slot of the round under
// way if one waits for it, else it is held outside the slots, listed in g_caught.
void hold_caught_thread(pid_t me, ucontext_t* context) noexcept {
  const std::size_t count = g_slot_count.load(std::memory_order_acquire);
  for (std::size_t i = 0; i < count; ++i) {
    std::uint64_t expected = slot_word(me, kPending);
    if (g_slots[i].compare_exchange_strong(expected, slot_word(me, kRunning), std::memory_order_acq_rel)) {
      stay_held(i, me, context);
      g_slots[i].store(slot_word(me, kDone), std::memory_order_release);
      answer();
      return;
    }
  }
  const std::size_t index = g_caught_count.fetch_add(1, std::memory_order_seq_cst);
  if (index < kMaxThreads) g_caught[index].store(me, std::memory_order_release);
  while (g_released.load(std::memory_order_acquire) == 0) futex_wait(g_released, 0, 100'000'000);
  serialize_this_thread();  // Code changed while we were held.
}

}  // namespace

Result<Rendezvous> visit_other_threads(ThreadVisitor visit, void* arg, std::chrono::milliseconds timeout,
                                       Sleepers sleepers) {
  if (!visit) return fail(ErrorCode::kInvalidArgument, "visit_other_threads: null visitor");
  if (ThreadHold::held_by_this_thread())
    return fail(ErrorCode::kConflict, "visit_other_threads: this thread holds every other thread still; release first");
  auto sig = rendezvous_signal();
  if (!sig) return tl::unexpected(sig.error());

  std::lock_guard guard(rendezvous_mutex());
  auto tids = other_threads();
  if (!tids) return tl::unexpected(std::move(tids).error());
  Rendezvous result;
  std::vector<pid_t> awake;
  if (sleepers == Sleepers::kLeaveAsleep) {
    sort_sleepers(*tids, awake, result.sleeping, [](const BlockedSyscall&) { return true; });
  } else {
    awake = std::move(*tids);
  }

  // Publish the visitor before the slots: a handler that claims a slot sees it.
  g_holding.store(false, std::memory_order_relaxed);
  g_visit.store(visit, std::memory_order_release);
  g_arg.store(arg, std::memory_order_release);
  signal_threads(awake, 0, *sig, result.unanswered);
  await_answers(0, awake.size(), std::chrono::steady_clock::now() + timeout);
  // Give up on the rest; wait for visits in progress (they are short and must finish).
  result.visited = close_slots(0, awake.size(), result.unanswered);
  g_slot_count.store(0, std::memory_order_release);
  return result;
}

Result<BlockedSyscall> blocked_syscall(pid_t tid) {
  BlockedSyscall call;
  char line[512];
  switch (read_blocked_syscall(tid, call, line)) {
    case CallState::kBlocked: return call;
    case CallState::kRunning:
      return fail(ErrorCode::kUnprovable,
                  "thread " + std::to_string(tid) + " is running, not blocked in a system call");
    case CallState::kNotInCall:
      return fail(ErrorCode::kUnprovable, "thread " + std::to_string(tid) + " is not in a system call");
    case CallState::kUnreadable:
      PUNCH_TRY(read_task_file(tid, "syscall", line, sizeof line));  // For its message.
      return fail(ErrorCode::kUnprovable, "/proc/self/task/" + std::to_string(tid) + "/syscall: unreadable");
    case CallState::kUnparsable: break;
  }
  return fail(ErrorCode::kUnprovable,
              "/proc/self/task/" + std::to_string(tid) + "/syscall: cannot parse `" + std::string(line) + "`");
}

Result<std::uintptr_t> blocked_syscall_address(pid_t tid) {
  auto call = blocked_syscall(tid);
  if (!call) return tl::unexpected(std::move(call).error());
  return call->pc;
}

bool waits_for_vfork_child(const BlockedSyscall& call) {
  switch (call.number) {
    case SYS_vfork: return true;
    case SYS_clone: return (call.args[0] & CLONE_VFORK) != 0;
#ifdef SYS_clone3
    case SYS_clone3: {
      std::uint64_t flags = 0;  // struct clone_args starts with its flags.
      auto read = safe_read(call.args[0], std::span(reinterpret_cast<std::uint8_t*>(&flags), sizeof flags));
      return !read || *read != sizeof flags || (flags & CLONE_VFORK) != 0;  // Unreadable: assume the worst.
    }
#endif
    default: return false;
  }
}

// --- ThreadHold ---

ThreadHold::ThreadHold(ThreadHold&& other) noexcept
    : held_(std::move(other.held_)),
      sleeping_(std::move(other.sleeping_)),
      woke_(std::move(other.woke_)),
      unanswered_(std::move(other.unanswered_)),
      tripwire_fits_(std::move(other.tripwire_fits_)),
      guardable_(std::move(other.guardable_)),
      tripwire_writer_(std::exchange(other.tripwire_writer_, nullptr)),
      holding_(other.holding_) {
  other.holding_ = false;
}

ThreadHold& ThreadHold::operator=(ThreadHold&& other) noexcept {
  if (this != &other) {
    release();
    held_ = std::move(other.held_);
    sleeping_ = std::move(other.sleeping_);
    woke_ = std::move(other.woke_);
    unanswered_ = std::move(other.unanswered_);
    guardable_ = std::move(other.guardable_);
    tripwire_fits_ = std::move(other.tripwire_fits_);
    tripwire_writer_ = std::exchange(other.tripwire_writer_, nullptr);
    holding_ = other.holding_;
    other.holding_ = false;
  }
  return *this;
}

// One attempt: signal every thread not left asleep and wait for all of them
// to be held (see hold_signalled: `grace` for a thread with the signal
// blocked, until `deadline` for the others). Fails naming a straggler; the
// caller releases what was held and tries again, so no thread stays paused
// for longer than one grace period behind a thread that cannot answer.
Status ThreadHold::try_hold(int sig, std::chrono::microseconds grace, std::chrono::steady_clock::time_point deadline) {
  // The list is read again once everyone on it is held: a thread created
  // while the others were being signalled (its creator was still running) is
  // on no list yet, and would run through the change unheld. Once every
  // listed thread is held nobody creates threads any more, so this ends.
  std::vector<pid_t> seen;
  for (int round = 0;; ++round) {
    // A thread parked inside punch's fork handler counts as held without a
    // signal, which it may have blocked (parked_threads.hpp).
    detail::claim_parked_threads(seen);
    std::sort(seen.begin(), seen.end());
    auto tids = other_threads();
    if (!tids) return tl::unexpected(std::move(tids).error());
    std::erase_if(*tids, [&](pid_t tid) { return std::binary_search(seen.begin(), seen.end(), tid); });
    if (tids->empty()) return {};
    if (round == 8) return fail(ErrorCode::kTimeout, "threads kept appearing while the others were held");
    // A vfork child (posix_spawn) runs in this memory with default signal
    // handlers until it execs or exits; no signal can hold it.
    std::vector<pid_t> awake;
    pid_t vfork_parent = 0;
    sort_sleepers(*tids, awake, sleeping_, may_stay_asleep, &vfork_parent, &tripwire_fits_);
    // Room for every listed thread, before any is signalled: recheck_sleepers
    // runs with them held and must not allocate (see read_task_text).
    held_.reserve(held_.size() + tids->size());
    woke_.reserve(sleeping_.size());
    unanswered_.reserve(sleeping_.size());
    guardable_.reserve(sleeping_.size());
    tripwire_fits_.reserve(sleeping_.size());
    if (vfork_parent != 0)
      return fail(ErrorCode::kTimeout, "thread " + std::to_string(vfork_parent) +
                                           " waits for a vfork child (posix_spawn?) that runs in this process's "
                                           "memory with default signal handlers and has not exec'd or exited yet");
    std::vector<pid_t> unanswered;
    PUNCH_TRY(
        hold_signalled(awake, g_slot_count.load(std::memory_order_acquire), sig, grace, deadline, held_, unanswered));
    // A thread that cannot answer is never taken for harmless, even asleep: a
    // thread with every signal blocked found asleep in a futex wait met a trap
    // byte within milliseconds in the tests (something woke it during the
    // change), and one found in a short call (an exiting thread's munmap)
    // returns at once. The try fails; the caller tries again.
    if (!unanswered.empty()) {
      const pid_t tid = unanswered.front();
      auto call = blocked_syscall(tid);
      return fail(ErrorCode::kTimeout, "thread " + std::to_string(tid) +
                                           (call ? " is blocked in system call " + std::to_string(call->number)
                                                 : std::string(" is running")) +
                                           (blocks_signal(tid, sig) ? " with the hold signal blocked"
                                                                    : " and did not answer the hold signal in time"));
    }
    seen.insert(seen.end(), tids->begin(), tids->end());
    std::sort(seen.begin(), seen.end());
  }
}

Result<ThreadHold> ThreadHold::hold_other_threads(std::chrono::milliseconds timeout) {
  auto sig = rendezvous_signal();
  if (!sig) return tl::unexpected(sig.error());
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto grace = std::chrono::microseconds(1000);
  auto pause = std::chrono::microseconds(50);
  for (;;) {
    ThreadHold hold;
    rendezvous_mutex().lock();
    hold.holding_ = true;  // From here release() unlocks, whatever happens.
    g_released.store(0, std::memory_order_relaxed);
    g_holding.store(true, std::memory_order_release);
    g_slot_count.store(0, std::memory_order_release);
    g_caught_count.store(0, std::memory_order_seq_cst);
    Status held = hold.try_hold(*sig, grace, deadline);
    if (held) {
      g_hold_owner.store(raw_gettid(), std::memory_order_seq_cst);
      return hold;
    }
    hold.release();
    const auto now = std::chrono::steady_clock::now();
    if (held.error().code != ErrorCode::kTimeout || now >= deadline)
      return fail(held.error().code, held.error().message + " (tried for " + std::to_string(timeout.count()) + " ms)");
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(pause, deadline - now));
    pause = std::min(pause * 2, std::chrono::microseconds(2000));
    grace = std::min(grace * 2, std::chrono::microseconds(50000));
  }
}

Status ThreadHold::recheck_sleepers(std::chrono::milliseconds timeout) {
  if (!holding_) return fail(ErrorCode::kInvalidArgument, "ThreadHold::recheck_sleepers: nothing is held");
  auto sig = rendezvous_signal();
  if (!sig) return tl::unexpected(sig.error());
  // The other threads are held: no allocation here but for an error (the
  // vectors were reserved in try_hold). A sleeper counts as still asleep
  // only in a call it could have been left asleep in; one caught by its
  // tripwire is held already (read after /proc: it lists itself before it
  // sleeps in the catch).
  woke_.clear();
  std::size_t still = 0;
  for (const SleepingThread& s : sleeping_) {
    BlockedSyscall call;
    char line[512];
    if (read_blocked_syscall(s.tid, call, line) == CallState::kBlocked && may_stay_asleep(call) &&
        !waits_for_vfork_child(call)) {
      tripwire_fits_[still] = tripwire_fits(call);
      sleeping_[still++] = {s.tid, call.pc};
    } else if (!caught(s.tid) && thread_alive(s.tid)) {
      woke_.push_back(s.tid);
    }
  }
  sleeping_.resize(still);
  tripwire_fits_.resize(still);
  if (woke_.empty()) return {};
  unanswered_.clear();
  PUNCH_TRY(hold_signalled(woke_, g_slot_count.load(std::memory_order_acquire), *sig, timeout,
                           std::chrono::steady_clock::now() + timeout, held_, unanswered_));
  if (!unanswered_.empty())  // As in try_hold: never taken for harmless.
    return fail(ErrorCode::kTimeout, "thread " + std::to_string(unanswered_.front()) +
                                         " woke during the change and did not answer within " +
                                         std::to_string(timeout.count()) + " ms (its signals blocked?)");
  return {};
}

Status ThreadHold::guard_sleepers(CodeWriter& writer, std::uint8_t trap, std::span<const CodeRange> avoid,
                                  std::chrono::milliseconds timeout) {
  if (!holding_) return fail(ErrorCode::kInvalidArgument, "ThreadHold::guard_sleepers: nothing is held");
  // A thread that meets a tripwire and must not wait puts its byte back with
  // a raw write to /proc/self/mem (woken_sleepers.hpp): no other method.
  if (writer.method() != WriteMethod::kProcMem) return {};
  const int trap_signal = trap == 0xF4 ? SIGSEGV : SIGTRAP;
  tripwire_writer_ = &writer;
  // Every round looks at the sleepers again (recheck_sleepers), the first
  // one too: a sleeper that woke before its tripwire stood runs on, and is
  // held by a signal; one that went back to sleep elsewhere gets a tripwire
  // in the next round. Three rounds, then it stays unguarded.
  for (int round = 0; round < 3 && !sleeping_.empty(); ++round) {
    // A resume address gets a tripwire only if every sleeper there can take one.
    guardable_.clear();
    for (std::size_t i = 0; i < sleeping_.size(); ++i)
      guardable_.push_back(may_guard(sleeping_[i].tid, sleeping_[i].pc, tripwire_fits_[i], trap_signal, avoid));
    bool armed = false;
    for (std::size_t i = 0; i < sleeping_.size(); ++i) {
      const std::uintptr_t pc = sleeping_[i].pc;
      if (detail::tripwire_armed_at(pc)) {
        if (!guardable_[i])  // It went to sleep under a tripwire armed for another: it would die there.
          return fail(ErrorCode::kTimeout, pc,
                      "thread " + std::to_string(sleeping_[i].tid) +
                          " sleeps here with the trap signal blocked, under a tripwire armed for another sleeper");
        continue;
      }
      bool all = true;
      for (std::size_t j = i; j < sleeping_.size() && all; ++j) all = sleeping_[j].pc != pc || guardable_[j];
      if (all) armed = detail::arm_tripwire(writer, pc, trap) || armed;
    }
    if (armed) PUNCH_TRY(sync_all_threads());  // Every sleeper's CPU sees its tripwire before we look again.
    PUNCH_TRY(recheck_sleepers(timeout));
    if (!armed) break;
  }
  return {};
}

bool ThreadHold::held_by_this_thread() noexcept { return g_hold_owner.load(std::memory_order_relaxed) == raw_gettid(); }

void ThreadHold::release() noexcept {
  if (!holding_) return;
  holding_ = false;
  // Tripwires go before anyone is released: a thread caught by one resumes at its byte.
  if (tripwire_writer_) detail::disarm_tripwires(*std::exchange(tripwire_writer_, nullptr));
  g_hold_owner.store(0, std::memory_order_seq_cst);
  g_released.store(1, std::memory_order_seq_cst);
  futex_wake_all(g_released);
  detail::release_parked_threads();
  // Wait until every held thread has left its slot: the next round reuses them.
  const std::size_t count = g_slot_count.load(std::memory_order_acquire);
  for (std::size_t i = 0; i < count; ++i)
    while (slot_state(g_slots[i].load(std::memory_order_acquire)) == kHeld ||
           slot_state(g_slots[i].load(std::memory_order_acquire)) == kRunning)
      ::sched_yield();
  // And until every thread caught by a tripwire has left its catch: the next hold resets g_released.
  while (g_catching.load(std::memory_order_seq_cst) != 0) ::sched_yield();
  g_slot_count.store(0, std::memory_order_release);
  g_holding.store(false, std::memory_order_release);
  held_.clear();
  sleeping_.clear();
  tripwire_fits_.clear();
  rendezvous_mutex().unlock();
}

SleeperCatch catch_woken_sleeper(std::uintptr_t address, std::uint8_t trap, ucontext_t* context) noexcept {
  SleeperCatch outcome = SleeperCatch::kLate;
  switch (detail::tripwire_at(address, trap)) {
    case detail::Tripwire::kNone: return SleeperCatch::kNotATripwire;
    case detail::Tripwire::kRemoved: break;  // Its byte is back: run it.
    case detail::Tripwire::kArmed: {
      // Counted in before looking at the hold: release() puts the bytes back,
      // then releases, then waits until no thread is in here (all seq_cst).
      const pid_t me = raw_gettid();
      g_catching.fetch_add(1, std::memory_order_seq_cst);
      const pid_t owner = g_hold_owner.load(std::memory_order_seq_cst);
      bool restored = true;
      if (detail::tripwire_armed_at(address)) {
        if (owner != 0 && owner != me) {
          context->uc_mcontext.gregs[REG_RIP] = static_cast<greg_t>(address);  // As the fix-up sees it.
          hold_caught_thread(me, context);
          outcome = SleeperCatch::kHeld;
        } else {  // The holder met its own tripwire, or one outlived its hold: nobody to wait for.
          restored = detail::restore_tripwire(address);
          outcome = SleeperCatch::kTakenAway;
        }
      }
      g_catching.fetch_sub(1, std::memory_order_seq_cst);
      if (!restored) return SleeperCatch::kNotATripwire;
      break;
    }
  }
  context->uc_mcontext.gregs[REG_RIP] = static_cast<greg_t>(address);
  serialize_this_thread();
  return outcome;
}

}  // namespace punch::runtime
