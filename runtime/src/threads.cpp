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
#include <punch/runtime/threads.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

#include <punch/runtime/fork_safe_mutex.hpp>
#include <punch/runtime/raw_syscall.hpp>

#include "proc_self_fd.hpp"

namespace punch::runtime {
namespace {

enum SlotState : std::uint32_t { kPending = 1, kRunning = 2, kDone = 3, kAbandoned = 4 };

constexpr std::size_t kMaxThreads = 8192;

std::atomic<std::uint64_t> g_slots[kMaxThreads];
std::atomic<std::size_t> g_slot_count{0};
std::atomic<ThreadVisitor> g_visit{nullptr};
std::atomic<void*> g_arg{nullptr};
std::atomic<std::uint32_t> g_answers{0};  // Futex word: bumped by every answer.
std::atomic<bool> g_coordinator_sleeps{false};  // Answers wake the futex only then (a wake is a syscall).

constexpr std::uint64_t slot_word(pid_t tid, SlotState state) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(tid)) << 32) | state;
}
constexpr SlotState slot_state(std::uint64_t word) { return static_cast<SlotState>(word & 0xffffffffu); }
constexpr pid_t slot_tid(std::uint64_t word) { return static_cast<pid_t>(word >> 32); }

// Async-signal-safe: atomics and raw system calls only (see raw_syscall.hpp).
void on_rendezvous_signal(int, siginfo_t*, void* context) {
  const int saved_errno = errno;  // A visitor may touch it.
  const pid_t me = raw_gettid();
  const std::size_t count = g_slot_count.load(std::memory_order_acquire);
  for (std::size_t i = 0; i < count; ++i) {
    std::uint64_t expected = slot_word(me, kPending);
    if (g_slots[i].compare_exchange_strong(expected, slot_word(me, kRunning), std::memory_order_acq_rel)) {
      ThreadVisitor visit = g_visit.load(std::memory_order_acquire);
      visit(static_cast<ucontext_t*>(context), g_arg.load(std::memory_order_acquire));
      g_slots[i].store(slot_word(me, kDone), std::memory_order_release);
      g_answers.fetch_add(1, std::memory_order_seq_cst);
      if (g_coordinator_sleeps.load(std::memory_order_seq_cst)) futex_wake_all(g_answers);
      break;
    }
  }
  errno = saved_errno;
}

// The signal number, with its handler installed (once per process).
Result<int> rendezvous_signal() {
  static const Result<int> installed = []() -> Result<int> {
    int sig = SIGRTMIN + 5;
    if (const char* env = std::getenv("PUNCH_SIGNAL"); env && *env) {
      char* end = nullptr;
      long n = std::strtol(env, &end, 10);
      if (*end != '\0' || n < 1 || n > SIGRTMAX || n == SIGKILL || n == SIGSTOP)
        return fail(ErrorCode::kInvalidArgument, "PUNCH_SIGNAL=" + std::string(env) + ": not a usable signal number");
      sig = static_cast<int>(n);
    }
    struct sigaction old {};
    if (::sigaction(sig, nullptr, &old) != 0)
      return fail(ErrorCode::kIoError, "sigaction(" + std::to_string(sig) + "): " + std::strerror(errno));
    const bool taken = (old.sa_flags & SA_SIGINFO) ? old.sa_sigaction != nullptr
                                                   : (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN);
    if (taken)
      return fail(ErrorCode::kConflict, "signal " + std::to_string(sig) +
                                            " already has a handler; choose a free one with PUNCH_SIGNAL");
    struct sigaction sa {};
    sa.sa_sigaction = on_rendezvous_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;  // Interrupted system calls resume.
    sigfillset(&sa.sa_mask);
    if (::sigaction(sig, &sa, nullptr) != 0)
      return fail(ErrorCode::kIoError, "sigaction(" + std::to_string(sig) + "): " + std::strerror(errno));
    return sig;
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

// CPUs online, read while the program loads (a rendezvous spins only when
// every thread it waits for could have a CPU of its own).
const std::size_t g_online_cpus = [] {
  const long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<std::size_t>(n) : std::size_t{1};
}();

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
    if (n == 0) return tids;
    for (ssize_t offset = 0; offset < n;) {
      const auto* entry = reinterpret_cast<const dirent64*>(buffer + offset);
      const pid_t tid = static_cast<pid_t>(std::atoi(entry->d_name));
      if (tid > 0 && tid != me) tids.push_back(tid);
      offset += entry->d_reclen;
    }
  }
}

bool thread_alive(pid_t tid) { return ::syscall(SYS_tgkill, detail::current_pid(), tid, 0) == 0 || errno != ESRCH; }

}  // namespace

Result<Rendezvous> visit_other_threads(ThreadVisitor visit, void* arg, std::chrono::milliseconds timeout) {
  if (!visit) return fail(ErrorCode::kInvalidArgument, "visit_other_threads: null visitor");
  auto sig = rendezvous_signal();
  if (!sig) return tl::unexpected(sig.error());

  std::lock_guard guard(rendezvous_mutex());
  auto tids = other_threads();
  if (!tids) return tl::unexpected(std::move(tids).error());
  if (tids->size() > kMaxThreads)
    return fail(ErrorCode::kUnsupported, "visit_other_threads: " + std::to_string(tids->size()) +
                                             " threads, more than the " + std::to_string(kMaxThreads) + " supported");

  // Publish the visitor before the slots: a handler that claims a slot sees it.
  g_visit.store(visit, std::memory_order_release);
  g_arg.store(arg, std::memory_order_release);
  for (std::size_t i = 0; i < tids->size(); ++i) g_slots[i].store(slot_word((*tids)[i], kPending), std::memory_order_relaxed);
  g_slot_count.store(tids->size(), std::memory_order_release);

  Rendezvous result;
  const pid_t pid = detail::current_pid();
  for (std::size_t i = 0; i < tids->size(); ++i) {
    if (::syscall(SYS_tgkill, pid, (*tids)[i], *sig) == 0) continue;
    const int err = errno;
    std::uint64_t expected = slot_word((*tids)[i], kPending);
    if (g_slots[i].compare_exchange_strong(expected, slot_word((*tids)[i], kAbandoned)) && err != ESRCH)
      result.unanswered.push_back((*tids)[i]);  // Alive but cannot be signalled (queue full).
  }

  // When every thread visited can run on a CPU of its own beside this one,
  // answers come within microseconds: spin for them first (sleeping would add
  // a wake-up, an IPI in a VM, to every round). With more threads than CPUs
  // the ones waiting for a CPU need this one: sleep at once (a spin, even a
  // yielding one, cost the soak four fifths of its patch rate).
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + timeout;
  const bool room_for_all = tids->size() + 1 <= g_online_cpus;
  const auto spin_until = room_for_all ? start + std::chrono::microseconds(50) : start;
  for (;;) {
    const std::uint32_t seen = g_answers.load(std::memory_order_seq_cst);
    const auto now = std::chrono::steady_clock::now();
    const bool spinning = now < spin_until;
    bool waiting = false;
    for (std::size_t i = 0; i < tids->size(); ++i) {
      std::uint64_t word = g_slots[i].load(std::memory_order_acquire);
      if (slot_state(word) == kRunning) waiting = true;
      if (slot_state(word) != kPending) continue;
      if (!spinning && !thread_alive(slot_tid(word))) {  // Exited before answering: nothing left to visit.
        g_slots[i].compare_exchange_strong(word, slot_word(slot_tid(word), kAbandoned));
        continue;
      }
      waiting = true;
    }
    if (!waiting || now >= deadline) break;
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

  // Give up on the rest; wait for visits in progress (they are short and must finish).
  for (std::size_t i = 0; i < tids->size(); ++i) {
    std::uint64_t word = g_slots[i].load(std::memory_order_acquire);
    while (slot_state(word) == kPending || slot_state(word) == kRunning) {
      if (slot_state(word) == kPending &&
          g_slots[i].compare_exchange_strong(word, slot_word(slot_tid(word), kAbandoned))) {
        if (thread_alive(slot_tid(word))) result.unanswered.push_back(slot_tid(word));
        break;
      }
      if (slot_state(word) == kRunning) ::sched_yield();
      word = g_slots[i].load(std::memory_order_acquire);
    }
    if (slot_state(word) == kDone) ++result.visited;
  }
  g_slot_count.store(0, std::memory_order_release);
  return result;
}

Result<std::uintptr_t> blocked_syscall_address(pid_t tid) {
  const std::string path = "/proc/self/task/" + std::to_string(tid) + "/syscall";
  FILE* f = std::fopen(path.c_str(), "re");
  if (!f) return fail(ErrorCode::kUnprovable, path + ": " + std::strerror(errno));
  char line[512] = {};
  bool got = std::fgets(line, sizeof line, f) != nullptr;
  std::fclose(f);
  if (!got) return fail(ErrorCode::kUnprovable, path + ": empty");
  // "running", "-1 <sp> <pc>" (blocked, not in a system call), or "<nr> <6 args> <sp> <pc>".
  if (std::strncmp(line, "running", 7) == 0)
    return fail(ErrorCode::kUnprovable, "thread " + std::to_string(tid) + " is running, not blocked in a system call");
  long nr = std::strtol(line, nullptr, 10);
  const char* last = std::strrchr(line, ' ');
  if (nr < 0 || !last)
    return fail(ErrorCode::kUnprovable, "thread " + std::to_string(tid) + " is not in a system call");
  return static_cast<std::uintptr_t>(std::strtoull(last + 1, nullptr, 16));
}

}  // namespace punch::runtime
