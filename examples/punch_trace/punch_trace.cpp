// punch_trace — an LD_PRELOAD tool that counts calls to the functions named
// in PUNCH_TRACE, in any program, with punch's live hooks.
//
//   LD_PRELOAD=punch_trace.so PUNCH_TRACE=malloc,free,libc.so.6:write prog args
//
// PUNCH_TRACE_TOGGLE=<ms>  remove every hook and re-install it, phase after phase, <ms> apart
// PUNCH_TRACE_OUT=<file>   append the summary there instead of stderr
// PUNCH_TRACE_TIMEOUT=<ms> how long one hook change may wait for the program's
//                          threads (TransactionOptions::thread_timeout; punch's default 1000)
// PUNCH_TRACE_TIME=all|<names> also time these functions (time stamp counter,
//                          inclusive): only functions with no argument on the stack (see detour.hpp)
//
// The hooks are installed by a thread of the tool's own, started by a
// constructor, so the program's start is not held up by them; the same thread
// toggles them. The summary is written at exit. Nothing is ever printed while
// the program runs, and a refused hook is only counted and reported.
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <x86intrin.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <punch/patcher/hook.hpp>
#include <punch/runtime/raw_syscall.hpp>

#include "detour.hpp"
#include "summary.hpp"
#include "traced_function.hpp"

namespace punch_trace {
namespace {

using punch::runtime::raw_syscall;

struct State {
  std::deque<TracedFunction> functions;  // A deque: elements never move (the detours point into them).
  std::uint64_t toggle_ms = 0;
  std::uint64_t timeout_ms = 0;  // 0: punch's default.
  const char* out_path = nullptr;
  std::uint64_t start_ns = 0;
  std::uint64_t start_ticks = 0;  // The time stamp counter at start_ns.
  std::int64_t owner_pid = 0;     // The process whose thread installs and toggles.
  std::atomic<bool> stop{false};
  std::atomic<bool> hooking_finished{false};
  std::atomic<std::uint64_t> phases{0};
  std::mutex operation;  // Held for each hook operation: the summary waits for at most one.
};

State* g_state = nullptr;  // Leaked on purpose: hooks jump through it until the process is gone.

std::uint64_t now_ns() {
  timespec ts{};
  raw_syscall(SYS_clock_gettime, CLOCK_MONOTONIC, reinterpret_cast<long>(&ts));
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

// Raw nanosleep: the program may have asked to trace nanosleep or clock_nanosleep.
void sleep_ms(std::uint64_t ms) {
  timespec ts{static_cast<time_t>(ms / 1000), static_cast<long>(ms % 1000) * 1000000};
  while (raw_syscall(SYS_nanosleep, reinterpret_cast<long>(&ts), reinterpret_cast<long>(&ts)) == -EINTR) {
  }
}

// "write" -> libc's write when libc has it, else the global lookup; "obj:write" -> that object's.
// libc first: in a non-PIE executable the global lookup can give the executable's PLT stub.
void resolve(TracedFunction& fn) {
  const auto colon = fn.spec.rfind(':');
  if (colon != std::string::npos) {
    fn.symbol = {fn.spec.substr(colon + 1), "", fn.spec.substr(0, colon)};
  } else {
    fn.symbol = {fn.spec, "", "libc.so.6"};
    if (!punch::patcher::resolve_symbol(fn.symbol)) fn.symbol.object.clear();
  }
  auto address = punch::patcher::resolve_symbol(fn.symbol);
  if (address)
    fn.target = *address;
  else
    fn.unresolved = address.error().describe();
}

void refuse(TracedFunction& fn, const punch::Error& error) {
  if (fn.refusals.load() == 0) fn.first_refusal = error.describe();
  fn.refusals.fetch_add(1);
}

// Installs (disabled), publishes the trampoline for the detour, then enables:
// no call can reach the detour before `original` is valid.
void install(TracedFunction& fn) {
  if (!fn.hook.installed()) {
    punch::patcher::HookOptions options;
    options.enabled = false;
    if (g_state->timeout_ms != 0) options.transaction.thread_timeout = std::chrono::milliseconds(g_state->timeout_ms);
    auto hook = punch::patcher::Hook::install(fn.target, fn.detour, options);
    if (!hook) return refuse(fn, hook.error());
    fn.hook = std::move(*hook);
    fn.original.store(fn.hook.trampoline());
  }
  if (auto s = fn.hook.enable(); !s) return refuse(fn, s.error());  // Stays installed, disabled.
  fn.redirecting.store(true);
  fn.installs.fetch_add(1);
}

void remove(TracedFunction& fn) {
  if (!fn.hook.installed()) return;
  const bool was_enabled = fn.redirecting.load();
  if (auto s = fn.hook.remove(); !s) return refuse(fn, s.error());
  fn.redirecting.store(false);
  if (was_enabled) fn.removals.fetch_add(1);
}

// Runs `op` on every hookable function, one at a time under the operation
// lock, until asked to stop. Returns false when stopped.
template <class Op>
bool each_hookable(State& state, Op op) {
  for (auto& fn : state.functions) {
    if (fn.detour == nullptr) continue;
    std::lock_guard lock(state.operation);
    if (state.stop.load()) return false;
    op(fn);
  }
  return true;
}

bool all_installed(const State& state) {
  for (const auto& fn : state.functions)
    if (fn.detour != nullptr && !fn.hook.installed()) return false;
  return true;
}

void prepare(State& state) {
  std::unordered_map<void*, const TracedFunction*> seen;
  std::vector<TracedFunction*> resolved;
  for (auto& fn : state.functions) {
    resolve(fn);
    if (fn.target == nullptr) continue;  // Reported with its reason.
    if (auto [it, fresh] = seen.emplace(fn.target, &fn); !fresh) fn.shares_code_with = it->second->spec;
    resolved.push_back(&fn);
  }
  for (auto& fn : state.functions) fn.looked_up.store(true);
  if (auto s = emit_detours(resolved); !s)
    for (TracedFunction* fn : resolved) refuse(*fn, s.error());
}

void* hooking_thread(void*) {
  State& state = *g_state;
  pthread_setname_np(pthread_self(), "punch_trace");  // Named in gdb and /proc/<pid>/task/*/comm.
  prepare(state);
  const bool finished = each_hookable(state, install);
  state.hooking_finished.store(finished);
  if (!finished || state.toggle_ms == 0) return nullptr;
  for (std::uint64_t phase = 1;; ++phase) {
    sleep_ms(state.toggle_ms);
    if (!each_hookable(state, remove)) return nullptr;
    sleep_ms(state.toggle_ms);
    if (!each_hookable(state, install)) return nullptr;
    state.phases.store(2 * phase);
    // Removed hooks' trampolines are freed only while every detour's
    // `original` points at a live hook's: a thread still inside a detour
    // (punch cannot see into it, it has no symbol) then jumps somewhere valid.
    if (phase % 16 == 0 && all_installed(state)) {
      std::lock_guard lock(state.operation);
      if (state.stop.load()) return nullptr;
      (void)punch::patcher::release_retired_hook_code();
    }
  }
}

// Calls `each` with every name of a comma-separated list.
template <class Each>
void for_each_name(std::string_view list, Each each) {
  while (!list.empty()) {
    const auto comma = list.find(',');
    const auto name = list.substr(0, comma);
    if (!name.empty()) each(name);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
}

void parse_names(State& state, std::string_view list, std::string_view timed) {
  for_each_name(list, [&](std::string_view name) { state.functions.emplace_back().spec = std::string(name); });
  for (auto& fn : state.functions)
    for_each_name(timed, [&](std::string_view name) { fn.timed = fn.timed || name == "all" || name == fn.spec; });
}

__attribute__((constructor)) void start() {
  const char* names = std::getenv("PUNCH_TRACE");
  if (names == nullptr || *names == '\0') return;
  auto* state = new State;
  state->start_ns = now_ns();
  state->start_ticks = __rdtsc();
  state->owner_pid = raw_syscall(SYS_getpid);
  state->out_path = std::getenv("PUNCH_TRACE_OUT");
  if (const char* toggle = std::getenv("PUNCH_TRACE_TOGGLE")) state->toggle_ms = std::strtoull(toggle, nullptr, 10);
  if (const char* timeout = std::getenv("PUNCH_TRACE_TIMEOUT")) state->timeout_ms = std::strtoull(timeout, nullptr, 10);
  const char* timed = std::getenv("PUNCH_TRACE_TIME");
  parse_names(*state, names, timed ? timed : "");
  g_state = state;

  // The thread takes no signal of the program's (they go to the program's
  // threads, as without the tool); faults stay deliverable.
  sigset_t all, previous;
  sigfillset(&all);
  for (int s : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP}) sigdelset(&all, s);
  pthread_sigmask(SIG_SETMASK, &all, &previous);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t thread;
  if (pthread_create(&thread, &attr, hooking_thread, nullptr) != 0) state->hooking_finished.store(false);
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
}

// A forked child counts its own calls only; its copy of the hooking thread does not exist.
__attribute__((constructor)) void register_fork_handler() {
  pthread_atfork(nullptr, nullptr, [] {
    if (g_state == nullptr) return;
    for (auto& fn : g_state->functions) {
      fn.calls.store(0, std::memory_order_relaxed);
      fn.ticks.store(0, std::memory_order_relaxed);
    }
  });
}

__attribute__((destructor)) void finish() {
  State* state = g_state;
  if (state == nullptr) return;
  state->stop.store(true);
  // Wait for the operation under way, only where the hooking thread exists
  // (in a forked child the lock may be held by a thread that is not there).
  const bool owner = raw_syscall(SYS_getpid) == state->owner_pid;
  if (owner) state->operation.lock();
  RunFacts facts;
  facts.program = program_invocation_short_name;
  facts.pid = raw_syscall(SYS_getpid);
  facts.elapsed_ns = now_ns() - state->start_ns;
  const std::uint64_t elapsed_ticks = __rdtsc() - state->start_ticks;
  if (elapsed_ticks != 0)
    facts.ns_per_tick = static_cast<double>(facts.elapsed_ns) / static_cast<double>(elapsed_ticks);
  facts.toggle_ms = state->toggle_ms;
  facts.toggle_phases = state->phases.load();
  facts.hooking_finished = state->hooking_finished.load();
  facts.out_path = state->out_path;
  write_summary(state->functions, facts);
  // The lock stays held: no hook changes after the summary.
}

}  // namespace
}  // namespace punch_trace
