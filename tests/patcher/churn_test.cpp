// Threads that start and exit during a commit (issue 6): every fix-up round
// and sync signals the threads listed in /proc/self/task, some of which are
// gone by the time the signal is sent and some of which appear after the list
// was read. Short-lived threads that call the code being patched start and
// exit without pause while the main thread commits multi-instruction sites
// and installs and removes hooks: no commit fails or hangs, no result is wrong.
#include <asmjit/x86.h>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include <punch/patcher/hook.hpp>

#include "hook_targets.hpp"
#include "live_test_support.hpp"
#include "memory_snapshot.hpp"

namespace punch::patcher {
namespace {

using namespace asmjit;

std::atomic<Fn> g_original{nullptr};
long plus_1000(long x) { return g_original.load()(x) + 1000; }

TEST(ThreadChurn, CommitsAndHooksWhileThreadsStartAndExit) {
  // x + 1 through a multi-instruction prologue; the patch jumps over it to 2x.
  const std::uintptr_t prologue = test::emit_plus_one_with_prologue();
  const std::uintptr_t twice = test::emit([](x86::Assembler& a) {
    a.lea(x86::eax, x86::ptr(x86::rdi, x86::rdi));
    a.ret();
  });
  ASSERT_NE(prologue, 0u);
  ASSERT_NE(twice, 0u);
  const test::MemorySnapshot prologue_before(prologue, 16);
  const test::MemorySnapshot target_before(reinterpret_cast<void*>(hook_target_prologue), 32);
  const auto f = test::as<int (*)(int)>(prologue);

  std::atomic<bool> stop{false};
  std::atomic<long> wrong{0}, started{0};
  // Each short-lived thread calls both functions a few times, then exits.
  auto short_life = [&] {
    for (int x = 0; x < 50; ++x) {
      if (const int r = f(x); r != x + 1 && r != 2 * x) wrong.fetch_add(1);
      if (const long r = call(hook_target_prologue, x); r != 3 * x + 7 && r != 3 * x + 1007) wrong.fetch_add(1);
    }
  };
  std::vector<std::thread> churners;
  struct StopAndJoin {  // Also on a failed assertion: no joinable thread is destroyed.
    std::atomic<bool>& stop;
    std::vector<std::thread>& threads;
    ~StopAndJoin() { join(); }
    void join() {
      stop = true;
      for (auto& t : threads)
        if (t.joinable()) t.join();
    }
  } joiner{stop, churners};
  for (int c = 0; c < 2; ++c)
    churners.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        std::thread t(short_life);
        started.fetch_add(1);
        t.join();
      }
    });

  for (int i = 0; i < 150; ++i) {
    Transaction tx;
    ASSERT_TRUE(tx.add(test::site(prologue, test::bytes_at(prologue, 5), test::jmp_rel32(prologue, twice))));
    auto committed = tx.commit();
    ASSERT_TRUE(committed) << "commit " << i << ": " << committed.error().describe();
    auto reverted = tx.revert();
    ASSERT_TRUE(reverted) << "revert " << i << ": " << reverted.error().describe();

    HookOptions options;
    options.enabled = false;
    auto hook =
        Hook::install(reinterpret_cast<void*>(hook_target_prologue), reinterpret_cast<void*>(plus_1000), options);
    ASSERT_TRUE(hook) << "install " << i << ": " << hook.error().describe();
    g_original = hook->original<Fn>();
    auto enabled = hook->enable();
    ASSERT_TRUE(enabled) << "enable " << i << ": " << enabled.error().describe();
    auto removed = hook->remove();
    ASSERT_TRUE(removed) << "remove " << i << ": " << removed.error().describe();
  }
  joiner.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_GT(started.load(), 0);
  EXPECT_EQ(prologue_before.differences(), "");
  EXPECT_EQ(target_before.differences(), "");
  auto released = release_retired_hook_code();
  EXPECT_TRUE(released) << released.error().describe();
}

}  // namespace
}  // namespace punch::patcher
