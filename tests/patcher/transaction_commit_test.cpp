// Transaction commit and revert: single-instruction sites, batches, data sites, stats.
#include <sys/mman.h>

#include <gtest/gtest.h>

#include "live_test_support.hpp"
#include "memory_snapshot.hpp"

namespace punch::patcher {
namespace {

using test::as;
using test::bytes_at;
using test::emit_return;
using test::mov_eax;

// A committed site runs the new code; a reverted one the old code, byte for byte as before.
TEST(TransactionCommit, SingleSiteCommitAndRevert) {
  const std::uintptr_t f = emit_return(1);
  ASSERT_NE(f, 0u);
  const auto before = bytes_at(f, 6);
  const LiveStats stats0 = live_stats();
  Transaction tx;
  ASSERT_TRUE(tx.add(test::site(f, mov_eax(1), mov_eax(2))));
  ASSERT_TRUE(tx.validate());
  auto committed = tx.commit();
  ASSERT_TRUE(committed) << committed.error().describe();
  EXPECT_TRUE(tx.committed());
  EXPECT_EQ(as<int (*)()>(f)(), 2);
  EXPECT_EQ(bytes_at(f, 5), mov_eax(2));
  auto reverted = tx.revert();
  ASSERT_TRUE(reverted) << reverted.error().describe();
  EXPECT_FALSE(tx.committed());
  EXPECT_EQ(as<int (*)()>(f)(), 1);
  EXPECT_EQ(bytes_at(f, 6), before);
  const LiveStats stats1 = live_stats();
  EXPECT_GE(stats1.commits, stats0.commits + 1);
  EXPECT_GE(stats1.reverts, stats0.reverts + 1);
}

// Many sites in one function (coalesced writes) and in many functions: all change together.
TEST(TransactionCommit, BatchOfSitesInOneFunctionAndAcrossFunctions) {
  constexpr int kInOne = 64;
  // One function: kInOne `mov eax, i` in a row, then ret: returns the last one.
  const std::uintptr_t big = test::emit([&](asmjit::x86::Assembler& a) {
    for (int i = 0; i < kInOne; ++i) a.mov(asmjit::x86::eax, i);
    a.ret();
  });
  std::vector<std::uintptr_t> small;
  for (int i = 0; i < 16; ++i) small.push_back(emit_return(100 + i));
  const test::MemorySnapshot big_before(big, kInOne * 5 + 1);

  Transaction tx;
  for (int i = 0; i < kInOne; ++i) ASSERT_TRUE(tx.add(test::site(big + 5u * i, mov_eax(i), mov_eax(1000 + i))));
  for (int i = 0; i < 16; ++i) ASSERT_TRUE(tx.add(test::site(small[i], mov_eax(100 + i), mov_eax(200 + i))));
  auto committed = tx.commit();
  ASSERT_TRUE(committed) << committed.error().describe();
  EXPECT_EQ(as<int (*)()>(big)(), 1000 + kInOne - 1);
  for (int i = 0; i < kInOne; ++i) EXPECT_EQ(bytes_at(big + 5u * i, 5), mov_eax(1000 + i));
  for (int i = 0; i < 16; ++i) EXPECT_EQ(as<int (*)()>(small[i])(), 200 + i);
  ASSERT_TRUE(tx.revert());
  EXPECT_TRUE(big_before.unchanged()) << big_before.differences();
  for (int i = 0; i < 16; ++i) EXPECT_EQ(as<int (*)()>(small[i])(), 100 + i);
}

// The hlt trap byte works like int3 (for patching under a debugger).
TEST(TransactionCommit, HltTrapCommitsAndReverts) {
  const std::uintptr_t f = emit_return(5);
  TransactionOptions options;
  options.trap = TrapInstruction::kHlt;
  Transaction tx(options);
  ASSERT_TRUE(tx.add(test::site(f, mov_eax(5), mov_eax(6))));
  ASSERT_TRUE(tx.commit());
  EXPECT_EQ(as<int (*)()>(f)(), 6);
  ASSERT_TRUE(tx.revert());
  EXPECT_EQ(as<int (*)()>(f)(), 5);
}

// Data (non-executable) sites need the opt-in and are written in one plain write.
TEST(TransactionCommit, DataSiteWithOptIn) {
  void* page = ::mmap(nullptr, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(page, MAP_FAILED);
  const auto p = reinterpret_cast<std::uintptr_t>(page);
  TransactionOptions options;
  options.allow_non_executable = true;
  Transaction tx(options);
  ASSERT_TRUE(tx.add(test::site(p + 8, {0, 0, 0, 0}, {1, 2, 3, 4})));
  auto committed = tx.commit();
  ASSERT_TRUE(committed) << committed.error().describe();
  EXPECT_EQ(bytes_at(p + 8, 4), (std::vector<std::uint8_t>{1, 2, 3, 4}));
  ASSERT_TRUE(tx.revert());
  EXPECT_EQ(bytes_at(p + 8, 4), (std::vector<std::uint8_t>{0, 0, 0, 0}));
  ::munmap(page, 4096);
}

// Adding to a committed transaction, committing twice and reverting an uncommitted one are errors.
TEST(TransactionCommit, StateErrors) {
  const std::uintptr_t f = emit_return(7);
  Transaction tx;
  EXPECT_FALSE(tx.revert());
  ASSERT_TRUE(tx.add(test::site(f, mov_eax(7), mov_eax(8))));
  ASSERT_TRUE(tx.commit());
  EXPECT_EQ(tx.commit().error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(tx.add(test::site(f + 5, {0xC3}, {0xC3})).error().code, ErrorCode::kInvalidArgument);
  ASSERT_TRUE(tx.revert());
  EXPECT_EQ(as<int (*)()>(f)(), 7);
}

TEST(TransactionCommit, ParseTrapInstruction) {
  EXPECT_EQ(*parse_trap_instruction("int3"), TrapInstruction::kInt3);
  EXPECT_EQ(*parse_trap_instruction("hlt"), TrapInstruction::kHlt);
  EXPECT_EQ(parse_trap_instruction("nop").error().code, ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace punch::patcher

namespace punch::patcher {
namespace {

// Generations of finished commits are reclaimed by later commits on their
// own: a long run of commits never runs out of generation slots and frees
// the copies it no longer needs. Copies no thread entered need no
// rendezvous; copies a thread was sent into are freed after one.
TEST(TransactionCommit, CommitsReclaimRetiredCopiesOnTheirOwn) {
  // `lea eax, [rdi+1]`: not an instruction the trap handler carries out, so each change has a copy.
  const std::uintptr_t f = test::emit([](asmjit::x86::Assembler& a) {
    a.lea(asmjit::x86::eax, asmjit::x86::ptr(asmjit::x86::rdi, 1));
    a.ret();
  });
  ASSERT_NE(f, 0u);
  const std::vector<std::uint8_t> plus1{0x8D, 0x47, 0x01}, plus2{0x8D, 0x47, 0x02};
  ASSERT_TRUE(std::equal(plus1.begin(), plus1.end(), reinterpret_cast<const std::uint8_t*>(f)));
  ASSERT_TRUE(reclaim_retired_copies());
  for (bool caller : {false, true}) {
    // With a thread calling the site, and trapped threads sent into the copies rather than waiting.
    std::atomic<bool> stop{false};
    std::thread calls;
    if (caller)
      calls = std::thread([&] {
        while (!stop.load(std::memory_order_relaxed)) (void)as<int (*)(int)>(f)(4);
      });
    TransactionOptions options;
    options.trapped_threads_wait = !caller;
    const LiveStats before = live_stats();
    for (int i = 0; i < 600; ++i) {  // 1,200 generations: several times the retained maximum.
      Transaction tx(options);
      ASSERT_TRUE(tx.add(test::site(f, plus1, plus2)));
      ASSERT_TRUE(tx.commit());
      ASSERT_TRUE(tx.revert());
    }
    stop = true;
    if (calls.joinable()) calls.join();
    ASSERT_TRUE(reclaim_retired_copies());
    EXPECT_EQ(as<int (*)(int)>(f)(4), 5);
    const LiveStats after = live_stats();
    EXPECT_GE(after.copies_freed + after.generations_retired_early,
              before.copies_freed + before.generations_retired_early + 1200);
    if (!caller) {
      EXPECT_EQ(after.reclaim_rounds, before.reclaim_rounds);  // Nobody entered a copy.
    }
    if (after.traps_redirected > before.traps_redirected) {
      EXPECT_GT(after.reclaim_rounds, before.reclaim_rounds);
    }
  }
}

// Generations without copies (every old instruction emulated: `mov eax,
// imm32`) are reclaimed with no rendezvous at all: their sites are remembered
// for the trap handler instead (a change's cost must not grow with the
// number of threads).
TEST(TransactionCommit, GenerationsWithoutCopiesNeedNoRendezvous) {
  const std::uintptr_t f = emit_return(1);
  ASSERT_NE(f, 0u);
  ASSERT_TRUE(reclaim_retired_copies());  // Earlier tests' generations with copies: not this test's.
  const LiveStats before = live_stats();
  for (int i = 0; i < 600; ++i) {
    Transaction tx;
    ASSERT_TRUE(tx.add(test::site(f, mov_eax(1), mov_eax(2))));
    ASSERT_TRUE(tx.commit());
    ASSERT_TRUE(tx.revert());
  }
  EXPECT_EQ(as<int (*)()>(f)(), 1);
  const LiveStats after = live_stats();
  EXPECT_EQ(after.reclaim_rounds, before.reclaim_rounds);
  EXPECT_GE(after.generations_retired_early, before.generations_retired_early + 600);
}

}  // namespace
}  // namespace punch::patcher
