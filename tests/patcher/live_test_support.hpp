// Helpers for the transaction and live-protocol tests: JIT-emitted functions
// whose bytes the tests patch.
#pragma once

#include <asmjit/x86.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include <punch/patcher/transaction.hpp>
#include <punch/runtime/code_heap.hpp>
#include <punch/runtime/fault_injection.hpp>
#include <punch/runtime/jit.hpp>

namespace punch::test {

//! Emits a function with `body` into the global code heap; fails the test on error.
inline std::uintptr_t emit(const std::function<void(asmjit::x86::Assembler&)>& body) {
  auto heap = runtime::CodeHeap::global();
  EXPECT_TRUE(heap) << heap.error().describe();
  if (!heap) return 0;
  runtime::Jit jit(**heap);
  asmjit::CodeHolder code;
  code.init(runtime::Jit::environment());
  asmjit::x86::Assembler a(&code);
  body(a);
  auto fn = jit.add(code);
  EXPECT_TRUE(fn) << fn.error().describe();
  return fn ? reinterpret_cast<std::uintptr_t>(*fn) : 0;
}

//! `int f() { return value; }` as `mov eax, imm32; ret`: the mov is a 5-byte single-instruction site.
inline std::uintptr_t emit_return(int value) {
  return emit([&](asmjit::x86::Assembler& a) {
    a.mov(asmjit::x86::eax, value);
    a.ret();
  });
}

//! `int f(int x)` returning x + 1 through a multi-instruction prologue
//! (`push rbx; mov ebx, edi; mov eax, ebx; add eax, 1; pop rbx; ret`): a
//! 5-byte jump over its entry replaces three instructions and needs the
//! thread fix-up round.
inline std::uintptr_t emit_plus_one_with_prologue() {
  namespace x86 = asmjit::x86;
  return emit([](x86::Assembler& a) {
    a.push(x86::rbx);
    a.mov(x86::ebx, x86::edi);
    a.mov(x86::eax, x86::ebx);
    a.add(x86::eax, 1);
    a.pop(x86::rbx);
    a.ret();
  });
}

//! The 5 bytes of `mov eax, imm32`.
inline std::vector<std::uint8_t> mov_eax(int value) {
  std::vector<std::uint8_t> b{0xB8, 0, 0, 0, 0};
  std::memcpy(b.data() + 1, &value, 4);
  return b;
}

//! The 5 bytes of `jmp rel32` from `from` to `to`.
inline std::vector<std::uint8_t> jmp_rel32(std::uintptr_t from, std::uintptr_t to) {
  const auto rel = static_cast<std::int32_t>(static_cast<std::int64_t>(to) - static_cast<std::int64_t>(from + 5));
  std::vector<std::uint8_t> b{0xE9, 0, 0, 0, 0};
  std::memcpy(b.data() + 1, &rel, 4);
  return b;
}

//! Bytes at an address (readable memory).
inline std::vector<std::uint8_t> bytes_at(std::uintptr_t address, std::size_t n) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(address);
  return {p, p + n};
}

//! A site with no explicit extent.
inline patcher::Site site(std::uintptr_t address, std::vector<std::uint8_t> expected,
                          std::vector<std::uint8_t> replacement) {
  return patcher::Site{address, std::move(expected), std::move(replacement), std::nullopt};
}

template <class Fn>
Fn as(std::uintptr_t address) {
  return reinterpret_cast<Fn>(address);
}

//! Threads that run `call_once(k)` (k: the thread's call count) in a loop
//! until stopped, counting the calls and the results it reports wrong. Each
//! yields every 1024 calls; storm() sends each a SIGWINCH (the test installs a
//! handler), to make preemption inside a site likely. Constructed, every
//! thread has started and some call has been made.
struct Callers {
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> calls{0}, wrong{0};
  std::vector<std::thread> threads;
  std::vector<std::atomic<pid_t>> tids;

  Callers(int n, const std::function<bool(std::uint64_t)>& call_once) : tids(n) {
    for (int i = 0; i < n; ++i)
      threads.emplace_back([this, i, call_once] {
        tids[i] = static_cast<pid_t>(::syscall(SYS_gettid));
        for (std::uint64_t k = 0; !stop.load(std::memory_order_relaxed); ++k) {
          if (!call_once(k)) wrong.fetch_add(1);
          calls.fetch_add(1, std::memory_order_relaxed);
          if ((k & 1023) == 0) sched_yield();
        }
      });
    for (auto& t : tids)
      while (t.load() == 0) std::this_thread::yield();
    while (calls.load() == 0) std::this_thread::yield();
  }
  void storm() {
    for (auto& t : tids) ::syscall(SYS_tgkill, ::getpid(), t.load(), SIGWINCH);
  }
  //! Stops and joins every thread (before reading counters that must include all their calls).
  void join() {
    stop = true;
    for (auto& t : threads)
      if (t.joinable()) t.join();
  }
  ~Callers() { join(); }
};

//! While alive, every sync first waits 0.2 ms, so each change stays in flight
//! long enough that callers meet its trap bytes even on a host that runs them
//! rarely (a KVM guest whose other vCPU is stolen: without it, every trap
//! could be delivered only after the change had landed).
class SlowSyncs {
 public:
  SlowSyncs() {
    runtime::testing::inject_faults(runtime::testing::FaultPoint::kSync, 1, runtime::testing::kEveryOperation,
                                    runtime::testing::FaultKind::kDelay);
  }
  ~SlowSyncs() { runtime::testing::clear_faults(); }
  SlowSyncs(const SlowSyncs&) = delete;
  SlowSyncs& operator=(const SlowSyncs&) = delete;
};

//! Commits and reverts `tx` at least `min_flips` times, then on until
//! `enough()` holds or 20 s have passed: bounded by time, since on a loaded
//! machine callers may rarely run while a flip is in flight. Returns the
//! flips made; a failed commit or revert fails the test and stops.
inline int flip_until(patcher::Transaction& tx, int min_flips, const std::function<bool()>& enough) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  int flips = 0;
  for (; flips < min_flips || (!enough() && std::chrono::steady_clock::now() < deadline); ++flips) {
    auto committed = tx.commit();
    auto reverted = committed ? tx.revert() : committed;
    if (!committed || !reverted) {
      ADD_FAILURE() << "flip " << flips << ": " << (committed ? reverted : committed).error().describe();
      break;
    }
  }
  return flips;
}

}  // namespace punch::test
