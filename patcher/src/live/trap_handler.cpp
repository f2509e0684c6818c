// Trap handler: claims only traps at sites of published generations and chains
// everything else to the handler that was installed before punch's.
//
// int3 reports rip just after the 0xCC, so the site is rip-1; hlt in user mode
// raises #GP, reported as SIGSEGV with rip at the hlt itself. Both arrive with
// si_code SI_KERNEL. A site still in flight runs its old code in full: the
// handler carries out a one-instruction jmp, call, nop or constant load
// (mov reg, imm) itself; anything else runs from its copy (old code in full,
// or new code in full). A site already finished (the trap was taken before
// the final byte landed but delivered after, or a core still saw the trap
// byte after it was replaced) re-runs the site, which now holds the new code
// in full.
//
// A trap at a tripwire that a hold put over a sleeper's resume address
// (runtime::ThreadHold::guard_sleepers) is the hold's, not a site's: that
// thread woke while the others are held, and is held with them.
//
// Where the run allows it (Generation::waitable), a thread that traps while
// the coordinator is still changing the sites first sleeps until the change
// has landed, then re-runs the site: a user-space trap costs a signal
// delivery, and a thread calling the site in a loop would otherwise trap again
// and again until the run ends. Asleep, its CPU needs no IPI from the run's
// syncs either. The sleep is bounded: a coordinator preempted for longer
// delays the thread by at most kMaxWaitNanoseconds, after which it runs the
// old code as above.
//
// The handler blocks every signal while it runs (sa_mask full): a rendezvous
// signal is then delivered only after it returns, which is what lets
// reclamation conclude that no thread is still between a trap and its handler.
// Its system calls are raw (raw_syscall.hpp): the user may have hooked libc's.
#include "trap_handler.hpp"

#include <signal.h>
#include <sys/syscall.h>
#include <ucontext.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <string>

#include <punch/runtime/fork_safe_mutex.hpp>
#include <punch/runtime/raw_syscall.hpp>
#include <punch/runtime/sync.hpp>
#include <punch/runtime/woken_sleepers.hpp>

#include "flight_table.hpp"
#include "lock_ranks.hpp"

namespace punch::patcher::live {
namespace {

struct sigaction g_previous_trap {};
struct sigaction g_previous_segv {};
bool g_installed_trap = false;  // Written under install_mutex() before the handler can run.
bool g_installed_segv = false;

// Fork-safe, so a child forked during an install can still install. Never destroyed.
runtime::ForkSafeMutex& install_mutex() {
  static auto* m = new runtime::ForkSafeMutex(detail::kTrapHandlerRank);
  return *m;
}
// Built while the program loads: a fork during the first install_mutex() call
// would leave the child's copy of the static's initialization guard taken.
[[maybe_unused]] const bool g_install_mutex_built = (static_cast<void>(install_mutex()), true);

// The previous handler's action, as the kernel would have taken it.
void chain(int sig, siginfo_t* info, void* context) {
  g_counters.traps_chained.fetch_add(1, std::memory_order_relaxed);
  const struct sigaction& previous = sig == SIGTRAP ? g_previous_trap : g_previous_segv;
  if (previous.sa_flags & SA_SIGINFO) {
    if (previous.sa_sigaction) previous.sa_sigaction(sig, info, context);
    return;
  }
  if (previous.sa_handler == SIG_IGN && sig == SIGTRAP) return;  // An ignored int3 just continues.
  if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
    previous.sa_handler(sig);
    return;
  }
  // Default action (an ignored fault also gets it, as the kernel forces it):
  // restore it, then let the signal happen again. A fault re-executes its
  // instruction on return; a trap or a sent signal is raised again, and
  // delivered once this handler returns (every signal is blocked until then).
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigaction(sig, &dfl, nullptr);
  const bool refaults = sig == SIGSEGV && info->si_code > 0;
  if (!refaults) runtime::raw_syscall(SYS_tgkill, runtime::raw_syscall(SYS_getpid), runtime::raw_gettid(), sig);
}

// Moves the interrupted thread so that it runs the old code of `site` in full.
void run_old_code(ucontext_t* uc, const FlightSite& site) {
  greg_t& rip = uc->uc_mcontext.gregs[REG_RIP];
  switch (site.emulation) {
    case Emulation::kSkip: rip = static_cast<greg_t>(site.end()); break;
    case Emulation::kCall: {
      // Pushed where the call would have pushed it: the kernel placed this
      // handler's frame below the red zone (or on the alternate stack).
      greg_t& rsp = uc->uc_mcontext.gregs[REG_RSP];
      rsp -= 8;
      *reinterpret_cast<std::uint64_t*>(rsp) = site.end();
      rip = static_cast<greg_t>(site.emulation_target);
      break;
    }
    case Emulation::kJump: rip = static_cast<greg_t>(site.emulation_target); break;
    case Emulation::kLoad: {
      // x86 register number -> its slot in the saved context.
      static constexpr int kSlot[16] = {REG_RAX, REG_RCX, REG_RDX, REG_RBX, REG_RSP, REG_RBP, REG_RSI, REG_RDI,
                                        REG_R8,  REG_R9,  REG_R10, REG_R11, REG_R12, REG_R13, REG_R14, REG_R15};
      uc->uc_mcontext.gregs[kSlot[site.emulation_register & 15]] = static_cast<greg_t>(site.emulation_target);
      rip = static_cast<greg_t>(site.end());
      break;
    }
    case Emulation::kNone: rip = static_cast<greg_t>(site.redirect); break;
  }
  (site.emulation == Emulation::kNone ? g_counters.traps_redirected : g_counters.traps_emulated)
      .fetch_add(1, std::memory_order_relaxed);
}

// The longest one trap sleeps waiting for a run to end.
constexpr long kMaxWaitNanoseconds = 1'000'000;

// Sleeps until `g`'s run is over when this thread may wait for it (never the
// coordinator itself); returns the generation's state then. `slept`: it did.
std::uint32_t wait_for_run(const Generation& g, bool& slept) {
  std::uint32_t state = g.state.load(std::memory_order_acquire);
  if (state != kInFlight || !g.waitable || runtime::raw_gettid() == g.coordinator) return state;
  slept = true;
  // Counted in before the futex compares the state; the coordinator stores the
  // state before it reads the count (both sequentially consistent), so either
  // it wakes us or the futex sees the new state and does not sleep.
  g.waiters.fetch_add(1, std::memory_order_seq_cst);
  runtime::futex_wait(g.state, kInFlight, kMaxWaitNanoseconds);  // Woken only once the state changed.
  g.waiters.fetch_sub(1, std::memory_order_release);
  state = g.state.load(std::memory_order_acquire);
  (state == kInFlight ? g_counters.trap_waits_expired : g_counters.traps_waited)
      .fetch_add(1, std::memory_order_relaxed);
  return state;
}

// Async-signal-safe: atomics, plain reads of published immutable data, raw syscalls.
void on_trap(int sig, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  auto* uc = static_cast<ucontext_t*>(context);
  greg_t& rip = uc->uc_mcontext.gregs[REG_RIP];
  if (info->si_code == SI_KERNEL) {
    const TrapInstruction kind = sig == SIGTRAP ? TrapInstruction::kInt3 : TrapInstruction::kHlt;
    const std::uintptr_t site = static_cast<std::uintptr_t>(rip) - (sig == SIGTRAP ? 1 : 0);
    // A sleeper the hold left asleep, woken while code changes: held until the change is done.
    if (const auto caught = runtime::catch_woken_sleeper(site, trap_byte(kind), uc);
        caught != runtime::SleeperCatch::kNotATripwire) {
      if (caught == runtime::SleeperCatch::kHeld) g_counters.sleepers_caught.fetch_add(1, std::memory_order_relaxed);
      if (caught == runtime::SleeperCatch::kTakenAway)
        g_counters.tripwires_taken_away.fetch_add(1, std::memory_order_relaxed);
      errno = saved_errno;
      return;
    }
    bool in_flight = false, finished = false, slept = false;
    {
      ReadGuard guard;
      for (std::size_t i = 0; i < kMaxGenerations && !in_flight; ++i) {
        const Generation* g = guard.slot(i);
        if (!g || g->trap != kind) continue;
        const FlightSite* s = g->site_at(site);
        if (!s) continue;
        if (wait_for_run(*g, slept) != kDraining) {
          // Counted before the thread is sent there, under the guard: reclamation looks after unpublishing.
          if (s->emulation == Emulation::kNone) g->copies_entered.fetch_add(1, std::memory_order_seq_cst);
          run_old_code(uc, *s);  // Under the guard: the generation cannot be freed meanwhile.
          in_flight = true;
        } else {
          finished = true;
        }
      }
    }
    // A site of a generation already reclaimed without a rendezvous (see
    // flight_table.hpp): its change has landed when the byte there is no
    // longer the trap (a trap byte still there is someone else's int3).
    if (!in_flight && !finished && is_retired_site(site, kind) &&
        *reinterpret_cast<const volatile std::uint8_t*>(site) != trap_byte(kind))
      finished = true;
    if (in_flight || finished) {
      if (!in_flight) {  // Re-run the site: its change landed (while we slept, or before the trap was delivered).
        rip = static_cast<greg_t>(site);
        if (!slept) g_counters.late_traps.fetch_add(1, std::memory_order_relaxed);
      }
      runtime::serialize_this_thread();  // A copy, or the site itself, was written by another thread.
      errno = saved_errno;
      return;
    }
  }
  errno = saved_errno;
  chain(sig, info, context);
}

}  // namespace

Status ensure_trap_handler(TrapInstruction trap) {
  const int sig = trap == TrapInstruction::kHlt ? SIGSEGV : SIGTRAP;
  const char* name = sig == SIGTRAP ? "SIGTRAP" : "SIGSEGV";
  std::lock_guard guard(install_mutex());
  bool& installed = sig == SIGTRAP ? g_installed_trap : g_installed_segv;
  if (installed) {
    struct sigaction now {};
    if (::sigaction(sig, nullptr, &now) != 0)
      return fail(ErrorCode::kIoError, std::string("sigaction(") + name + "): " + std::strerror(errno));
    if (!(now.sa_flags & SA_SIGINFO) || now.sa_sigaction != on_trap)
      return fail(ErrorCode::kConflict, std::string("the ") + name +
                                            " handler punch installed was replaced since; traps at sites would "
                                            "reach the new handler first, so no live patch is possible");
    return {};
  }
  struct sigaction& previous = sig == SIGTRAP ? g_previous_trap : g_previous_segv;
  if (::sigaction(sig, nullptr, &previous) != 0)
    return fail(ErrorCode::kIoError, std::string("sigaction(") + name + "): " + std::strerror(errno));
  struct sigaction sa {};
  sa.sa_sigaction = on_trap;
  // SA_ONSTACK: a thread with an alternate stack (e.g. near stack exhaustion) still gets handled.
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
  sigfillset(&sa.sa_mask);
  if (::sigaction(sig, &sa, nullptr) != 0)
    return fail(ErrorCode::kIoError, std::string("sigaction(") + name + "): " + std::strerror(errno));
  installed = true;
  return {};
}

}  // namespace punch::patcher::live
