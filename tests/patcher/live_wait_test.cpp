// A thread that meets a site while its change is under way sleeps in the trap
// handler until the change has landed, then runs the new code
// (TransactionOptions::trapped_threads_wait): it traps once per change rather
// than at every call. The coordinator itself never sleeps on its own change:
// it would wait for itself until the bound ran out.
#include <unistd.h>

#include <ctime>

#include <gtest/gtest.h>

#include <vector>

#include <punch/disasm/instruction.hpp>
#include <punch/runtime/safe_read.hpp>

#include "live_test_support.hpp"

namespace punch::patcher {
namespace {

TEST(LiveWait, ThreadsMeetingASiteInFlightSleepUntilTheChangeLands) {
  const std::uintptr_t f = test::emit_return(1);
  ASSERT_NE(f, 0u);
  test::Callers callers(2, [f](std::uint64_t) {
    const int r = test::as<int (*)()>(f)();
    return r == 1 || r == 2;
  });

  TransactionOptions options;
  options.hold_threads = false;  // The trap path: callers run on and meet the sites in flight.
  Transaction tx(options);       // Waiting is the default.
  ASSERT_TRUE(tx.add(test::site(f, test::mov_eax(1), test::mov_eax(2))));
  const LiveStats before = live_stats();
  test::SlowSyncs slow;
  const int flips = test::flip_until(tx, 200, [&] { return live_stats().traps_waited >= before.traps_waited + 4; });
  callers.join();
  const LiveStats after = live_stats();

  EXPECT_EQ(callers.wrong.load(), 0u) << "a caller got a result that is neither the old nor the new code's";
  EXPECT_GE(after.traps_waited, before.traps_waited + 4)
      << "callers did not sleep through changes in " << flips << " flips";
  EXPECT_EQ(test::bytes_at(f, 5), test::mov_eax(1));
}

// The site is `lea eax, [rdi+1]`: not one the handler can carry out, so a
// caller that meets it in flight is sent to the out-of-line copy of it.
TEST(LiveWait, WithWaitingOffThreadsRunTheOldCodeFromTheHandler) {
  const std::uintptr_t f = test::emit([](asmjit::x86::Assembler& a) {
    a.lea(asmjit::x86::eax, asmjit::x86::ptr(asmjit::x86::rdi, 1));
    a.ret();
  });
  ASSERT_NE(f, 0u);
  const std::vector<std::uint8_t> old_lea{0x8D, 0x47, 0x01}, new_lea{0x8D, 0x47, 0x02};  // x + 1, x + 2
  ASSERT_EQ(test::bytes_at(f, 3), old_lea);
  test::Callers callers(1, [f](std::uint64_t) {
    const int r = test::as<int (*)(int)>(f)(10);
    return r == 11 || r == 12;
  });
  TransactionOptions options;
  options.trapped_threads_wait = false;
  options.hold_threads = false;  // The trap path: callers run on and meet the sites in flight.
  Transaction tx(options);
  ASSERT_TRUE(tx.add(test::site(f, old_lea, new_lea)));
  const LiveStats before = live_stats();
  test::SlowSyncs slow;
  test::flip_until(tx, 0, [&] { return live_stats().traps_redirected >= before.traps_redirected + 4; });
  callers.join();
  const LiveStats after = live_stats();
  EXPECT_EQ(callers.wrong.load(), 0u);
  EXPECT_GE(after.traps_redirected, before.traps_redirected + 4) << "the caller never met a site in flight";
  EXPECT_EQ(after.traps_waited, before.traps_waited) << "a thread slept although waiting was off";
  EXPECT_EQ(after.trap_waits_expired, before.trap_waits_expired);
}

// The coordinator's own system calls are raw, but a slowed sync sleeps
// through libc's nanosleep(): with a trap byte over nanosleep()'s first
// instruction, the coordinator meets its own site in flight. It must run the
// old instruction at once, not sleep until the bound runs out waiting for
// itself. (The site keeps its bytes: the protocol still runs.)
TEST(LiveWait, TheCoordinatorNeverSleepsOnItsOwnChange) {
  const auto target = reinterpret_cast<std::uintptr_t>(&::nanosleep);
  auto head = runtime::safe_read_exact(target, 16);
  ASSERT_TRUE(head) << head.error().describe();
  auto first = disasm::decode(disasm::CodeSpan{target, *head}, target);
  ASSERT_TRUE(first) << first.error().describe();
  const std::vector<std::uint8_t> bytes(head->begin(), head->begin() + first->length);
  ASSERT_NE(bytes.front(), 0xCC);

  TransactionOptions options;
  options.hold_threads = false;  // Unheld, its slowed syncs call nanosleep(): it meets its own site.
  Transaction tx(options);
  ASSERT_TRUE(tx.add(Site{target, bytes, bytes, std::nullopt}));
  const LiveStats before = live_stats();
  test::SlowSyncs slow;
  auto committed = tx.commit();
  ASSERT_TRUE(committed) << committed.error().describe();
  auto reverted = tx.revert();
  ASSERT_TRUE(reverted) << reverted.error().describe();
  const LiveStats after = live_stats();

  EXPECT_GE(after.traps_redirected + after.traps_emulated, before.traps_redirected + before.traps_emulated + 2)
      << "the coordinator did not meet its own site (does a slowed sync still sleep through nanosleep()?)";
  EXPECT_EQ(after.trap_waits_expired, before.trap_waits_expired) << "the coordinator slept waiting for itself";
  EXPECT_EQ(after.traps_waited, before.traps_waited);
  EXPECT_EQ(*runtime::safe_read_exact(target, bytes.size()), bytes);
}

}  // namespace
}  // namespace punch::patcher
