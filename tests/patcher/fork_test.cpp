// fork and the patcher (issue 6): a forked child can emit, patch and hook —
// its trap handler, locks and /proc/self/mem descriptor work there — and what
// it patches is its own copy: the parent's bytes stay as they were. A fork
// while another thread is in the middle of a commit or a hook install does
// not leave the child's locks held.
#include <asmjit/x86.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <thread>
#include <vector>

#include <punch/patcher/hook.hpp>

#include "hook_targets.hpp"
#include "busy_thread.hpp"
#include "child_process.hpp"
#include "live_test_support.hpp"
#include "memory_snapshot.hpp"

namespace punch::patcher {
namespace {

using namespace asmjit;

// A child that hangs is killed, so a deadlock fails the test instead of hanging it.
constexpr unsigned kChildDeadlineSeconds = 60;

std::atomic<Fn> g_original{nullptr};
long plus_1000(long x) { return g_original.load()(x) + 1000; }

// Hooks with the detour seeing a published trampoline before it is enabled.
Result<Hook> hook_plus_1000(Fn target) {
  HookOptions options;
  options.enabled = false;
  auto hook = Hook::install(reinterpret_cast<void*>(target), reinterpret_cast<void*>(plus_1000), options);
  if (!hook) return hook;
  g_original = hook->original<Fn>();
  if (auto s = hook->enable(); !s) return tl::unexpected<Error>(s.error());
  return hook;
}

// `int f(int x) { return x * 2 + ... }`: the replacement the prologue jumps to.
std::uintptr_t emit_double() {
  return test::emit([](x86::Assembler& a) {
    a.lea(x86::eax, x86::ptr(x86::rdi, x86::rdi));
    a.ret();
  });
}

// The child JITs, patches and hooks; none of it reaches the parent.
TEST(PatcherFork, ChildEmitsPatchesAndHooksItsOwnCopy) {
  const std::uintptr_t f = test::emit_return(1);  // Parent: heap, writer and descriptor in use.
  ASSERT_NE(f, 0u);
  test::MemorySnapshot parent_f(f, 6);
  test::MemorySnapshot parent_square(reinterpret_cast<void*>(hook_target_square), 32);

  auto child = test::run_in_child([&]() -> int {
    ::alarm(kChildDeadlineSeconds);
    Transaction tx;
    CHILD_OK(tx.add(test::site(f, test::mov_eax(1), test::mov_eax(2))));
    CHILD_OK(tx.commit());
    CHILD_CHECK(test::as<int (*)()>(f)() == 2);
    const std::uintptr_t g = test::emit_return(7);
    CHILD_CHECK(g != 0 && test::as<int (*)()>(g)() == 7);
    auto hook = hook_plus_1000(hook_target_square);
    CHILD_OK(hook);
    CHILD_CHECK(call(hook_target_square, 3) == 1008);
    std::printf("child patched and hooked\n");
    std::fflush(stdout);
    return 0;  // Leaves with the patch and the hook in place: only this process's copy.
  });
  ASSERT_EQ(child.exit_code, 0) << child.describe();
  EXPECT_EQ(parent_f.differences(), "");
  EXPECT_EQ(parent_square.differences(), "");
  EXPECT_EQ(test::as<int (*)()>(f)(), 1);
  EXPECT_EQ(call(hook_target_square, 3), 8);
}

// The SIGTRAP handler and the rendezvous signal handler are inherited: in the
// child, live patches and hooks of code its own threads are running work.
TEST(PatcherFork, ChildPatchesLiveCodeItsThreadsAreRunning) {
  const std::uintptr_t prologue = test::emit_plus_one_with_prologue();
  const std::uintptr_t twice = emit_double();
  ASSERT_NE(prologue, 0u);
  ASSERT_NE(twice, 0u);
  Transaction warm;  // The parent has used the trap handler too.
  ASSERT_TRUE(warm.add(test::site(prologue, test::bytes_at(prologue, 5), test::jmp_rel32(prologue, twice))));
  ASSERT_TRUE(warm.commit());
  ASSERT_TRUE(warm.revert());
  test::MemorySnapshot parent_prologue(prologue, 16);

  auto child = test::run_in_child([&]() -> int {
    ::alarm(kChildDeadlineSeconds);
    std::atomic<long> wrong{0};
    const auto f = test::as<int (*)(int)>(prologue);
    {
      test::BusyThread a([&] {
        for (int x = 0; x < 100; ++x)
          if (const int r = f(x); r != x + 1 && r != 2 * x) wrong.fetch_add(1);
      });
      test::BusyThread b([&] {
        for (long x = 0; x < 100; ++x)
          if (const long r = call(hook_target_prologue, x); r != 3 * x + 7 && r != 3 * x + 1007) wrong.fetch_add(1);
      });
      for (int i = 0; i < 200; ++i) {
        Transaction tx;
        CHILD_OK(tx.add(test::site(prologue, test::bytes_at(prologue, 5), test::jmp_rel32(prologue, twice))));
        CHILD_OK(tx.commit());
        CHILD_OK(tx.revert());
        auto hook = hook_plus_1000(hook_target_prologue);
        CHILD_OK(hook);
        CHILD_OK(hook->remove());
      }
    }
    std::printf("wrong results: %ld\n", wrong.load());
    CHILD_CHECK(wrong.load() == 0);
    CHILD_OK(release_retired_hook_code());
    return 0;
  });
  ASSERT_EQ(child.exit_code, 0) << child.describe();
  EXPECT_EQ(parent_prologue.differences(), "");
}

// Another thread commits, reverts, hooks and unhooks without pause while the
// main thread forks: the child's copies of every patcher lock must be free.
// (Run under clang ASan too: 240 forks here never hung in its allocator,
// unlike the runtime's emit loop, which allocates far more per iteration.)
TEST(PatcherFork, ForkDuringCommitsAndHookInstallsDoesNotDeadlockTheChild) {
  const std::uintptr_t prologue = test::emit_plus_one_with_prologue();
  const std::uintptr_t twice = emit_double();
  ASSERT_NE(prologue, 0u);
  ASSERT_NE(twice, 0u);
  std::atomic<long> operations{0}, errors{0};
  test::BusyThread busy([&] {
    Transaction tx;
    bool ok = tx.add(test::site(prologue, test::bytes_at(prologue, 5), test::jmp_rel32(prologue, twice))) &&
              tx.commit() && tx.revert();
    auto hook = hook_plus_1000(hook_target_square);
    ok = ok && hook && hook->remove();
    if (!ok) errors.fetch_add(1);
    operations.fetch_add(1);
  });
  for (int i = 0; i < 20; ++i) {
    auto child = test::run_in_child([&]() -> int {
      ::alarm(kChildDeadlineSeconds);
      // The parent's thread is gone here; whatever it was doing, the bytes it
      // committed are either all there or all not (a transaction is whole).
      Transaction tx;
      const auto now = test::bytes_at(prologue, 5);
      CHILD_OK(tx.add(test::site(prologue, now, test::jmp_rel32(prologue, twice))));
      if (now != test::jmp_rel32(prologue, twice)) {
        CHILD_OK(tx.commit());
        CHILD_CHECK(test::as<int (*)(int)>(prologue)(21) == 42);
      }
      auto hook = hook_plus_1000(hook_target_prologue);
      CHILD_OK(hook);
      CHILD_CHECK(call(hook_target_prologue, 1) == 1010);
      CHILD_OK(hook->remove());
      return 0;
    });
    ASSERT_EQ(child.exit_code, 0) << "fork " << i << ": " << child.describe();
  }
  EXPECT_EQ(errors.load(), 0);
  EXPECT_GT(operations.load(), 0);
}

}  // namespace
}  // namespace punch::patcher
