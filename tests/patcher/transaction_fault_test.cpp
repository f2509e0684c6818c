// Faults mid-operation (issue 6): whichever write or sync fails, a commit or a
// revert is either fully applied or fully rolled back, every byte compared.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include <punch/runtime/fault_injection.hpp>

#include "fault_case.hpp"

#include "live_test_support.hpp"

namespace punch::patcher {
namespace {

using namespace asmjit;
using runtime::testing::FaultKind;
using runtime::testing::FaultPoint;

using test::FaultCase;

TransactionOptions options_holding(bool hold_threads) {
  TransactionOptions options;
  options.hold_threads = hold_threads;
  return options;
}

struct Batch {
  std::vector<Site> sites;
  Transaction tx;

  // Single-instruction sites in separate functions, two coalesced sites in one
  // function, and a multi-instruction prologue hooked with a jump.
  explicit Batch(bool hold_threads = true) : tx(options_holding(hold_threads)) {
    for (int i = 0; i < 3; ++i) {
      const std::uintptr_t f = test::emit_return(10 + i);
      sites.push_back(test::site(f, test::mov_eax(10 + i), test::mov_eax(20 + i)));
    }
    const std::uintptr_t two = test::emit([](x86::Assembler& a) {
      a.mov(x86::ecx, 1);
      a.mov(x86::eax, 2);
      a.add(x86::eax, x86::ecx);
      a.ret();
    });
    sites.push_back(test::site(two, test::bytes_at(two, 5), {0xB9, 5, 0, 0, 0}));        // mov ecx,5
    sites.push_back(test::site(two + 5, test::bytes_at(two + 5, 5), test::mov_eax(7)));  // mov eax,7
    const std::uintptr_t prologue = test::emit_plus_one_with_prologue();
    const std::uintptr_t alt = test::emit([](x86::Assembler& a) {
      a.lea(x86::eax, x86::ptr(x86::rdi, 2));
      a.ret();
    });
    sites.push_back(test::site(prologue, test::bytes_at(prologue, 5), test::jmp_rel32(prologue, alt)));
    for (const Site& s : sites) EXPECT_TRUE(tx.add(s));
  }

  // Whether every site holds its old (or every site its new) bytes; messages name the rest.
  ::testing::AssertionResult all(bool replaced) const {
    for (std::size_t i = 0; i < sites.size(); ++i) {
      const auto& want = replaced ? sites[i].replacement : sites[i].expected;
      if (test::bytes_at(sites[i].address, want.size()) != want)
        return ::testing::AssertionFailure()
               << "site #" << i << " does not hold its " << (replaced ? "new" : "old") << " bytes";
    }
    return ::testing::AssertionSuccess();
  }
  bool behaves(bool replaced) const {
    const bool singles = test::as<int (*)()>(sites[0].address)() == (replaced ? 20 : 10);
    const bool pair = test::as<int (*)()>(sites[3].address)() == (replaced ? 12 : 3);
    const bool hooked = test::as<int (*)(int)>(sites[5].address)(40) == (replaced ? 42 : 41);
    return singles && pair && hooked;
  }
};

class TransactionFault : public ::testing::TestWithParam<FaultCase> {
 protected:
  void TearDown() override { runtime::testing::clear_faults(); }
};

TEST_P(TransactionFault, EveryNthFailureInCommitAppliesOrRollsBackEverything) {
  Batch batch(GetParam().hold_threads);
  int failed = 0;
  for (std::uint64_t n = 1; n <= 24; ++n) {
    runtime::testing::inject_fault(GetParam().point, n, FaultKind::kEio);
    auto committed = batch.tx.commit();
    runtime::testing::clear_faults();
    if (committed) {
      ASSERT_TRUE(batch.all(true)) << "n=" << n;
      ASSERT_TRUE(batch.behaves(true)) << "n=" << n;
      auto reverted = batch.tx.revert();
      ASSERT_TRUE(reverted) << reverted.error().describe();
    } else {
      ++failed;
      EXPECT_NE(committed.error().code, ErrorCode::kInconsistent) << committed.error().describe();
      EXPECT_FALSE(batch.tx.committed());
    }
    ASSERT_TRUE(batch.all(false)) << "n=" << n;
    ASSERT_TRUE(batch.behaves(false)) << "n=" << n;
  }
  EXPECT_GT(failed, 0) << "no injected fault made a commit fail";
}

TEST_P(TransactionFault, EveryNthFailureInRevertRestoresOrKeepsEverything) {
  Batch batch(GetParam().hold_threads);
  int failed = 0;
  for (std::uint64_t n = 1; n <= 24; ++n) {
    ASSERT_TRUE(batch.tx.commit());
    runtime::testing::inject_fault(GetParam().point, n, FaultKind::kEio);
    auto reverted = batch.tx.revert();
    runtime::testing::clear_faults();
    if (reverted) {
      ASSERT_TRUE(batch.all(false)) << "n=" << n;
      ASSERT_TRUE(batch.behaves(false)) << "n=" << n;
    } else {
      ++failed;
      EXPECT_NE(reverted.error().code, ErrorCode::kInconsistent) << reverted.error().describe();
      EXPECT_TRUE(batch.tx.committed());
      ASSERT_TRUE(batch.all(true)) << "n=" << n;
      ASSERT_TRUE(batch.behaves(true)) << "n=" << n;
      ASSERT_TRUE(batch.tx.revert());
    }
  }
  EXPECT_GT(failed, 0) << "no injected fault made a revert fail";
}

INSTANTIATE_TEST_SUITE_P(WriteAndSync, TransactionFault, test::fault_cases(), test::fault_case_name);

// EINTR and short writes are retried by the writer: the commit succeeds.
TEST(TransactionFaultRetry, InterruptedAndShortWritesAreRetried) {
  for (FaultKind kind : {FaultKind::kEintr, FaultKind::kShortWrite}) {
    Batch batch;
    for (std::uint64_t n = 1; n <= 12; ++n) {
      runtime::testing::inject_fault(FaultPoint::kWrite, n, kind);
      auto committed = batch.tx.commit();
      runtime::testing::clear_faults();
      ASSERT_TRUE(committed) << committed.error().describe();
      ASSERT_TRUE(batch.all(true));
      ASSERT_TRUE(batch.tx.revert());
      ASSERT_TRUE(batch.all(false));
    }
  }
}

// Threads that start and exit while commits run (and their fix-up rounds signal
// every thread) neither hang nor break them.
TEST(TransactionFaultRetry, ThreadsStartingAndExitingDuringCommits) {
  Batch batch;
  std::atomic<bool> stop{false};
  std::thread churn([&] {
    while (!stop) std::thread([] {}).join();
  });
  for (int i = 0; i < 200; ++i) {
    auto committed = batch.tx.commit();
    ASSERT_TRUE(committed) << committed.error().describe();
    ASSERT_TRUE(batch.tx.revert());
  }
  stop = true;
  churn.join();
  EXPECT_TRUE(batch.all(false));
}

}  // namespace
}  // namespace punch::patcher
