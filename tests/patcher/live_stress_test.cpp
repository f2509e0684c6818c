// Stress: threads call while the main thread flips a single-instruction site and
// a multi-instruction prologue site thousands of times. Every result must be the
// old or the new value, and nothing may crash. A storm of signals aimed at the
// callers (and their sched_yield calls) makes preemption inside the prologue common.
#include <signal.h>

#include <gtest/gtest.h>

#include "live_test_support.hpp"

namespace punch::patcher {
namespace {

using namespace asmjit;

void on_storm(int) {}

class LiveStress : public ::testing::Test {
 protected:
  void SetUp() override {
    struct sigaction sa {};
    sa.sa_handler = on_storm;
    sa.sa_flags = SA_RESTART;
    // Application handlers should block every signal while they run (or be short):
    // a thread interrupted inside a site and still in its handler cannot be seen by the fix-up.
    sigfillset(&sa.sa_mask);
    ::sigaction(SIGWINCH, &sa, &previous_);
  }
  void TearDown() override { ::sigaction(SIGWINCH, &previous_, nullptr); }
  struct sigaction previous_ {};
};

constexpr int kCallers = 3;

// A single-instruction site flipped between `mov eax, 1` and `mov eax, 2`.
TEST_F(LiveStress, SingleInstructionSite) {
  const std::uintptr_t f = test::emit_return(1);
  test::Callers callers(kCallers, [f](std::uint64_t) {
    const int r = test::as<int (*)()>(f)();
    return r == 1 || r == 2;
  });
  Transaction tx;
  ASSERT_TRUE(tx.add(test::site(f, test::mov_eax(1), test::mov_eax(2))));
  const LiveStats before = live_stats();
  constexpr int kFlips = 5000;
  for (int i = 0; i < kFlips; ++i) {
    auto s = tx.commit();
    ASSERT_TRUE(s) << s.error().describe();
    callers.storm();
    s = tx.revert();
    ASSERT_TRUE(s) << s.error().describe();
  }
  EXPECT_EQ(callers.wrong.load(), 0u);
  EXPECT_GT(callers.calls.load(), 0u);
  const LiveStats after = live_stats();
  EXPECT_EQ(after.commits - before.commits, static_cast<std::uint64_t>(kFlips));
  std::printf("single site: %d flips x2, %llu calls, %llu traps slept through a change, %llu redirected, %llu late\n",
              kFlips, static_cast<unsigned long long>(callers.calls.load()),
              static_cast<unsigned long long>(after.traps_waited - before.traps_waited),
              static_cast<unsigned long long>(after.traps_redirected - before.traps_redirected),
              static_cast<unsigned long long>(after.late_traps - before.late_traps));
}

// A prologue of several instructions replaced by a jump to another implementation.
TEST_F(LiveStress, MultiInstructionPrologueSite) {
  // old(x): push rbx; mov ebx,edi; pause; pause; mov eax,ebx | add eax,1; pop rbx; ret   -> x+1
  // (the pauses keep callers inside the prologue long enough for the fix-up to find them there)
  const std::uintptr_t f = test::emit([](x86::Assembler& a) {
    a.push(x86::rbx);
    a.mov(x86::ebx, x86::edi);
    a.pause();
    a.pause();
    a.mov(x86::eax, x86::ebx);
    a.add(x86::eax, 1);
    a.pop(x86::rbx);
    a.ret();
  });
  // new(x): lea eax,[rdi+2]; ret   -> x+2
  const std::uintptr_t g = test::emit([](x86::Assembler& a) {
    a.lea(x86::eax, x86::ptr(x86::rdi, 2));
    a.ret();
  });
  constexpr std::size_t kSite = 1 + 2 + 2 + 2 + 2;
  test::Callers callers(kCallers, [f](std::uint64_t k) {
    const int x = static_cast<int>(k & 0xffff);
    const int r = test::as<int (*)(int)>(f)(x);
    return r == x + 1 || r == x + 2;
  });
  auto hook = test::jmp_rel32(f, g);
  hook.resize(kSite, 0xCC);  // Never executed: a thread left inside the old prologue would die on it.
  Transaction tx;
  ASSERT_TRUE(tx.add(test::site(f, test::bytes_at(f, kSite), hook)));
  const LiveStats before = live_stats();
  constexpr int kFlips = 600;
  for (int i = 0; i < kFlips; ++i) {
    auto s = tx.commit();
    ASSERT_TRUE(s) << s.error().describe();
    callers.storm();
    s = tx.revert();
    ASSERT_TRUE(s) << s.error().describe();
  }
  EXPECT_EQ(callers.wrong.load(), 0u);
  const LiveStats after = live_stats();
  EXPECT_GE(after.fixup_rounds - before.fixup_rounds, static_cast<std::uint64_t>(kFlips));
  std::printf("prologue: %d flips x2, %llu calls, %llu threads moved, %llu traps redirected, %llu late\n", kFlips,
              static_cast<unsigned long long>(callers.calls.load()),
              static_cast<unsigned long long>(after.threads_moved - before.threads_moved),
              static_cast<unsigned long long>(after.traps_redirected - before.traps_redirected),
              static_cast<unsigned long long>(after.late_traps - before.late_traps));
}

}  // namespace
}  // namespace punch::patcher
