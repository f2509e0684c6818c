// Inline hooks: the cost of an install/remove cycle (live, with and without a
// busy thread running the target) against the mprotect way of patching, and
// the cost of a call through a hook against calling the detour directly.
// Mid hooks: a call through a mid hook's stub against the unhooked call, and
// the install/remove cycle.
#include <benchmark/benchmark.h>

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <optional>
#include <thread>

#include "busy_caller.hpp"
#include <punch/patcher/hook.hpp>
#include <punch/patcher/mid_hook.hpp>
#include <punch/patcher/transaction.hpp>

// The functions the benchmarks patch and call, with known entries. Each fits
// in 32 bytes followed by int3 padding, so the extent {start, start + 32} covers it.
asm(".pushsection .text\n"
    ".intel_syntax noprefix\n"
    "        .macro TARGET name\n"
    "        .p2align 5, 0xcc\n"
    "        .globl \\name\n"
    "        .type \\name, @function\n"
    "\\name:\n"
    "        .endm\n"
    "        .macro END name\n"
    "        .size \\name, . - \\name\n"
    "        .endm\n"
    "\n"
    "# Multi-instruction prologue: returns 3x + 7. Hooked and unhooked in a loop.\n"
    "TARGET bench_hook_cycle_target\n"
    "        push rbp\n"
    "        mov rbp, rsp\n"
    "        lea rax, [rdi + rdi * 2]\n"
    "        add rax, 7\n"
    "        pop rbp\n"
    "        ret\n"
    "END bench_hook_cycle_target\n"
    "\n"
    "# Patchable entry (one 5-byte nop): returns x + 1.\n"
    "TARGET bench_hook_pad_target\n"
    "        .byte 0x0f, 0x1f, 0x44, 0x00, 0x00\n"
    "        lea rax, [rdi + 1]\n"
    "        ret\n"
    "END bench_hook_pad_target\n"
    "\n"
    "# Called while hooked (BM_CallHooked, BM_CallTrampoline): returns 3x + 7.\n"
    "TARGET bench_call_hooked_target\n"
    "        push rbp\n"
    "        mov rbp, rsp\n"
    "        lea rax, [rdi + rdi * 2]\n"
    "        add rax, 7\n"
    "        pop rbp\n"
    "        ret\n"
    "END bench_call_hooked_target\n"
    "\n"
    "# Never hooked: the same body (BM_CallDirect, BM_CallDetourDirect).\n"
    "TARGET bench_call_plain_target\n"
    "        push rbp\n"
    "        mov rbp, rsp\n"
    "        lea rax, [rdi + rdi * 2]\n"
    "        add rax, 7\n"
    "        pop rbp\n"
    "        ret\n"
    "END bench_call_plain_target\n"
    "\n"
    "# Mid-hooked at +4, the lea and the add stolen (BM_MidHook): the same body.\n"
    "TARGET bench_mid_target\n"
    "        push rbp\n"
    "        mov rbp, rsp\n"
    "        lea rax, [rdi + rdi * 2]\n"
    "        add rax, 7\n"
    "        pop rbp\n"
    "        ret\n"
    "END bench_mid_target\n"
    "        .p2align 5, 0xcc\n"
    "\n"
    ".att_syntax prefix\n"
    ".popsection\n");

extern "C" {
long bench_hook_cycle_target(long);
long bench_hook_pad_target(long);
long bench_call_hooked_target(long);
long bench_call_plain_target(long);
long bench_mid_target(long);
}

namespace {

using Fn = long (*)(long);
using punch::patcher::Hook;
using punch::patcher::HookOptions;

std::atomic<Fn> g_original{bench_call_plain_target};

long detour(long x) { return g_original.load(std::memory_order_relaxed)(x) + 1; }

// The detour of the install/remove cycles: the busy thread may reach it at any
// time, so it does not depend on a trampoline pointer being published.
long cycle_detour(long x) { return x + 1; }

HookOptions options_for(Fn target, bool threads_wait = true, bool absolute = false) {
  HookOptions options;
  options.transaction.trapped_threads_wait = threads_wait;
  options.force_absolute_entry = absolute;
  const auto start = reinterpret_cast<std::uintptr_t>(target);
  options.function = punch::disasm::FunctionExtent{start, start + 32, punch::disasm::FunctionExtent::Source::kCaller};
  return options;
}

// busy_threads: 0 none; 1 a thread calling the target all along (it meets
// the trap bytes, is sent through the handler, and must get every result
// right); 2 a thread running other code, as in the mprotect reference (which
// is not live-safe, so its busy thread cannot call the code it patches).
// threads_wait: TransactionOptions::trapped_threads_wait (off: the busy
// thread runs the old code from the handler at every trap instead of sleeping).
// absolute: HookOptions::force_absolute_entry (the 16-byte entry, as with no memory in reach).
void hook_cycles(benchmark::State& state, Fn target, bool threads_wait = true, bool absolute = false) {
  const Fn called = state.range(0) == 2 ? bench_call_plain_target : target;
  punch::bench::BusyCaller busy(state.range(0) > 0,
                                [called, x = 0L]() mutable { benchmark::DoNotOptimize(called(++x)); });
  const std::uint64_t before = busy.calls();
  const punch::patcher::LiveStats stats_before = punch::patcher::live_stats();
  for (auto _ : state) {
    auto hook = Hook::install(reinterpret_cast<void*>(target), reinterpret_cast<void*>(cycle_detour),
                              options_for(target, threads_wait, absolute));
    if (!hook) return state.SkipWithError(hook.error().describe().c_str());
    if (auto s = hook->remove(); !s) return state.SkipWithError(s.error().describe().c_str());
  }
  busy.report(state, before);
  // How often the busy thread met a trap byte (and went through the handler), per cycle.
  const punch::patcher::LiveStats stats = punch::patcher::live_stats();
  const auto traps =
      (stats.traps_waited - stats_before.traps_waited) + (stats.traps_emulated - stats_before.traps_emulated) +
      (stats.traps_redirected - stats_before.traps_redirected) + (stats.late_traps - stats_before.late_traps);
  if (state.iterations() > 0)
    state.counters["traps"] = static_cast<double>(traps) / static_cast<double>(state.iterations());
}

void BM_HookInstallRemove(benchmark::State& state) { hook_cycles(state, bench_hook_cycle_target); }
BENCHMARK(BM_HookInstallRemove)->Arg(0)->Arg(1)->Arg(2)->ArgName("busy_threads")->UseRealTime();

void BM_HookInstallRemove_patchable(benchmark::State& state) { hook_cycles(state, bench_hook_pad_target); }
BENCHMARK(BM_HookInstallRemove_patchable)
    ->Name("BM_HookInstallRemove/patchable_entry")
    ->Arg(0)
    ->Arg(1)
    ->Arg(2)
    ->ArgName("busy_threads")
    ->UseRealTime();

void BM_HookInstallRemove_absolute(benchmark::State& state) { hook_cycles(state, bench_hook_cycle_target, true, true); }
BENCHMARK(BM_HookInstallRemove_absolute)
    ->Name("BM_HookInstallRemove/absolute_entry")
    ->Arg(0)
    ->Arg(1)
    ->ArgName("busy_threads")
    ->UseRealTime();

void BM_HookInstallRemove_no_wait(benchmark::State& state) { hook_cycles(state, bench_hook_cycle_target, false); }
BENCHMARK(BM_HookInstallRemove_no_wait)
    ->Name("BM_HookInstallRemove/no_wait")
    ->Arg(1)
    ->ArgName("busy_threads")
    ->UseRealTime();

void BM_HookInstallRemove_patchable_no_wait(benchmark::State& state) {
  hook_cycles(state, bench_hook_pad_target, false);
}
BENCHMARK(BM_HookInstallRemove_patchable_no_wait)
    ->Name("BM_HookInstallRemove/patchable_entry/no_wait")
    ->Arg(1)
    ->ArgName("busy_threads")
    ->UseRealTime();

// The way mprotect-based hooking libraries patch: RWX, memcpy, back to RX — on
// a private copy of the function (bench only: punch itself never maps W+X).
// "Install" writes a jmp rel32 over the copy's entry, "remove" writes the
// original bytes back. The busy thread runs other code in the same process
// (mprotect's cost grows with the threads it must shoot down TLBs for; a
// thread inside the copy could crash, since this way is not live-safe).
void BM_HookInstallRemove_mprotect(benchmark::State& state) {
  const long page = sysconf(_SC_PAGESIZE);
  void* mapping = mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapping == MAP_FAILED) return state.SkipWithError("mmap failed");
  auto* copy = static_cast<std::uint8_t*>(mapping);
  std::memcpy(copy, reinterpret_cast<const void*>(bench_hook_cycle_target), 32);
  std::memcpy(copy + 32, reinterpret_cast<const void*>(bench_hook_cycle_target), 32);
  mprotect(copy, page, PROT_READ | PROT_EXEC);
  std::uint8_t original[5], jump[5] = {0xE9, 32 - 5, 0, 0, 0};  // jmp copy+32 (the second copy).
  std::memcpy(original, copy, 5);
  std::optional<punch::bench::BusyCaller> busy;
  busy.emplace(state.range(0) > 0, [x = 0L]() mutable { benchmark::DoNotOptimize(bench_call_plain_target(++x)); });
  const std::uint64_t before = busy->calls();
  for (auto _ : state) {
    for (const std::uint8_t* bytes : {jump, original}) {
      if (mprotect(copy, page, PROT_READ | PROT_WRITE | PROT_EXEC) != 0)
        return state.SkipWithError("mprotect RWX refused (MDWE?)");
      std::memcpy(copy, bytes, 5);
      mprotect(copy, page, PROT_READ | PROT_EXEC);
    }
  }
  busy->report(state, before);
  busy.reset();
  munmap(copy, page);
}
BENCHMARK(BM_HookInstallRemove_mprotect)
    ->Name("BM_HookInstallRemove/mprotect_reference")
    ->Arg(0)
    ->Arg(1)
    ->ArgName("busy_threads")
    ->UseRealTime();

void call_loop(benchmark::State& state, Fn f) {
  Fn volatile target = f;
  long x = 0;
  for (auto _ : state) benchmark::DoNotOptimize(target(++x));
}

void BM_CallDirect(benchmark::State& state) { call_loop(state, bench_call_plain_target); }
BENCHMARK(BM_CallDirect);

// Detour calling the original through its trampoline, reached through the entry jump.
void BM_CallHooked(benchmark::State& state) {
  HookOptions options = options_for(bench_call_hooked_target);
  options.enabled = false;
  auto hook =
      Hook::install(reinterpret_cast<void*>(bench_call_hooked_target), reinterpret_cast<void*>(detour), options);
  if (!hook) return state.SkipWithError(hook.error().describe().c_str());
  g_original = hook->original<Fn>();
  if (!hook->enable()) return state.SkipWithError("enable failed");
  call_loop(state, bench_call_hooked_target);
  (void)hook->remove();
  g_original = bench_call_plain_target;
}
BENCHMARK(BM_CallHooked);

void BM_CallTrampoline(benchmark::State& state) {
  auto hook = Hook::install(reinterpret_cast<void*>(bench_call_hooked_target), reinterpret_cast<void*>(detour),
                            options_for(bench_call_hooked_target));
  if (!hook) return state.SkipWithError(hook.error().describe().c_str());
  call_loop(state, hook->original<Fn>());
  (void)hook->remove();
}
BENCHMARK(BM_CallTrampoline);

// The detour called directly, calling the unhooked original: no hook in between.
void BM_CallDetourDirect(benchmark::State& state) {
  g_original = bench_call_plain_target;
  call_loop(state, detour);
}
BENCHMARK(BM_CallDetourDirect);

// Mid hooks. The site: bench_mid_target + 4, after the prologue.
void* mid_site() { return reinterpret_cast<char*>(bench_mid_target) + 4; }

punch::patcher::MidHookOptions mid_options(bool vector_registers = false, bool vector_state = true) {
  punch::patcher::MidHookOptions options;
  const auto start = reinterpret_cast<std::uintptr_t>(bench_mid_target);
  options.function = punch::disasm::FunctionExtent{start, start + 32, punch::disasm::FunctionExtent::Source::kCaller};
  options.vector_registers = vector_registers;
  options.vector_state = vector_state;
  return options;
}

void mid_detour(punch::patcher::MidContext& ctx) { benchmark::DoNotOptimize(ctx.rax); }

// The unhooked body, in the same run as the hooked rows below.
void BM_MidHook_call_unhooked(benchmark::State& state) { call_loop(state, bench_mid_target); }
BENCHMARK(BM_MidHook_call_unhooked)->Name("BM_MidHook/call/unhooked");

// Through the stub: registers and the whole vector state saved, an empty detour called, all restored.
void mid_call(benchmark::State& state, bool vector_registers, bool vector_state = true) {
  auto hook = punch::patcher::MidHook::install(mid_site(), mid_detour, mid_options(vector_registers, vector_state));
  if (!hook) return state.SkipWithError(hook.error().describe().c_str());
  call_loop(state, bench_mid_target);
  (void)hook->remove();
}
void BM_MidHook_call(benchmark::State& state) { mid_call(state, false); }
BENCHMARK(BM_MidHook_call)->Name("BM_MidHook/call/hooked");
void BM_MidHook_call_vector(benchmark::State& state) { mid_call(state, true); }
BENCHMARK(BM_MidHook_call_vector)->Name("BM_MidHook/call/hooked_vector_registers");
// Without the xsave/xrstor of the whole vector state (MidHookOptions::vector_state off).
void BM_MidHook_call_no_state(benchmark::State& state) { mid_call(state, false, false); }
BENCHMARK(BM_MidHook_call_no_state)->Name("BM_MidHook/call/hooked_without_vector_state");

// One install (disabled: no transaction; stub written; one to enable) and one remove.
void BM_MidHook_install_remove(benchmark::State& state) {
  punch::bench::BusyCaller busy(state.range(0) > 0,
                                [x = 0L]() mutable { benchmark::DoNotOptimize(bench_mid_target(++x)); });
  const std::uint64_t before = busy.calls();
  for (auto _ : state) {
    auto hook = punch::patcher::MidHook::install(mid_site(), mid_detour, mid_options());
    if (!hook) return state.SkipWithError(hook.error().describe().c_str());
    if (auto s = hook->remove(); !s) return state.SkipWithError(s.error().describe().c_str());
  }
  busy.report(state, before);
  (void)punch::patcher::release_retired_hook_code();
}
BENCHMARK(BM_MidHook_install_remove)
    ->Name("BM_MidHook/install_remove")
    ->Arg(0)
    ->Arg(1)
    ->ArgName("busy_threads")
    ->UseRealTime();

}  // namespace
