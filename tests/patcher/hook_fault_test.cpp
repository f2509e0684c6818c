// Faults mid-hook (issue 6): for every N, the N-th write or sync of a hook
// install, and of a hook removal, fails with EIO. Each operation is then
// either fully applied or fully rolled back: the target's bytes are compared
// byte for byte and the function's behaviour checked after every attempt.
#include <gtest/gtest.h>

#include <atomic>
#include <string>

#include <punch/patcher/hook.hpp>
#include <punch/runtime/code_heap.hpp>
#include <punch/runtime/fault_injection.hpp>

#include "fault_case.hpp"

#include "hook_targets.hpp"
#include "memory_snapshot.hpp"

namespace punch::patcher {
namespace {

using runtime::testing::FaultKind;
using runtime::testing::FaultPoint;

// Operations of one hook install or removal stay far below this; reaching it means the loop never ends.
constexpr std::uint64_t kMaxOperations = 200;
// How many operations an install takes varies a little (the heap syncs before
// reusing freed space): N keeps growing until this many N in a row never fired.
constexpr int kMissesToStop = 3;

std::atomic<Fn> g_inner_original{nullptr};
std::atomic<Fn> g_outer_original{nullptr};
long inner_plus_1000(long x) { return g_inner_original.load()(x) + 1000; }
long outer_times_2(long x) { return g_outer_original.load()(x) * 2; }

struct Target {
  const char* name;
  Fn function;
  long (*original)(long);
};
long prologue_value(long x) { return 3 * x + 7; }
long pad_value(long x) { return x + 100; }
const Target kTargets[] = {{"stolen prologue", hook_target_prologue, prologue_value},
                           {"patchable entry", hook_target_pad_nop5, pad_value}};

using test::FaultCase;
HookOptions g_options;  // Set by the fixture from its FaultCase.

// Installs the inner hook (enabled) with its original published first.
Result<Hook> install_inner(Fn target) {
  auto hook = Hook::install(reinterpret_cast<void*>(target), reinterpret_cast<void*>(inner_plus_1000), g_options);
  if (hook) g_inner_original = hook->original<Fn>();
  return hook;
}

Result<Hook> install_outer(Fn target) {
  auto hook = Hook::install(reinterpret_cast<void*>(target), reinterpret_cast<void*>(outer_times_2), g_options);
  if (hook) g_outer_original = hook->original<Fn>();
  return hook;
}

// The trampoline is published before the hook is enabled: install writes the
// trampoline and commits the entry; detours read g_*_original only when called
// (this test calls only from the main thread, after install returned).
class HookFault : public ::testing::TestWithParam<FaultCase> {
 protected:
  void SetUp() override {
    // The process-wide writer probes with real writes on first use: pick it before faults are armed.
    ASSERT_TRUE(runtime::CodeHeap::global());
    g_options = HookOptions{};
    g_options.transaction.hold_threads = GetParam().hold_threads;
  }
  void TearDown() override {
    runtime::testing::clear_faults();
    g_options = HookOptions{};
  }

  // Arms the N-th operation; returns whether the armed fault fired during `op`.
  template <class Op>
  bool with_fault(std::uint64_t n, Op op) {
    runtime::testing::inject_fault(GetParam().point, n, FaultKind::kEio);
    op();
    const bool fired = runtime::testing::faults_fired(GetParam().point) > 0;
    runtime::testing::clear_faults();
    return fired;
  }
};

TEST_P(HookFault, EveryNthFailureInAnInstallAppliesOrRollsBackEverything) {
  int failed = 0;  // Over both targets: which operations fail an install depends a little on the heap's state.
  for (const Target& t : kTargets) {
    SCOPED_TRACE(t.name);
    const test::MemorySnapshot original(reinterpret_cast<void*>(t.function), 32);
    int misses = 0;
    std::uint64_t n = 1;
    for (;; ++n) {
      ASSERT_LE(n, kMaxOperations);
      SCOPED_TRACE("operation #" + std::to_string(n) + " fails");
      Result<Hook> hook = fail(ErrorCode::kInvalidArgument, "not run");
      const bool fired = with_fault(n, [&] { hook = install_inner(t.function); });
      if (!hook) {
        ++failed;
        EXPECT_NE(hook.error().code, ErrorCode::kInconsistent) << hook.error().describe();
        ASSERT_EQ(original.differences(), "") << hook.error().describe();
        ASSERT_EQ(call(t.function, 5), t.original(5));
        ASSERT_TRUE(release_retired_hook_code());
        misses = 0;
        continue;
      }
      EXPECT_NE(original.differences(), "");  // Fully applied.
      ASSERT_EQ(call(t.function, 5), t.original(5) + 1000);
      ASSERT_EQ(call(hook->original<Fn>(), 5), t.original(5));
      ASSERT_TRUE(hook->remove());
      ASSERT_EQ(original.differences(), "");
      ASSERT_TRUE(release_retired_hook_code());  // The next install plans and writes a fresh trampoline.
      misses = fired ? 0 : misses + 1;
      if (misses == kMissesToStop) break;  // Installs need fewer than n operations: every one was made to fail.
    }
    EXPECT_GT(n, 2u);
  }
  EXPECT_GT(failed, 0) << "no injected fault made an install fail";
}

TEST_P(HookFault, EveryNthFailureInARemovalRestoresOrKeepsEverything) {
  int failed = 0;
  for (const Target& t : kTargets) {
    SCOPED_TRACE(t.name);
    const test::MemorySnapshot original(reinterpret_cast<void*>(t.function), 32);
    int misses = 0;
    std::uint64_t n = 1;
    for (;; ++n) {
      ASSERT_LE(n, kMaxOperations);
      SCOPED_TRACE("operation #" + std::to_string(n) + " fails");
      auto hook = install_inner(t.function);
      ASSERT_TRUE(hook) << hook.error().describe();
      const test::MemorySnapshot hooked(reinterpret_cast<void*>(t.function), 32);
      Status removed;
      const bool fired = with_fault(n, [&] { removed = hook->remove(); });
      if (!removed) {
        ++failed;
        EXPECT_NE(removed.error().code, ErrorCode::kInconsistent) << removed.error().describe();
        ASSERT_TRUE(hook->installed());
        ASSERT_EQ(hooked.differences(), "") << removed.error().describe();
        ASSERT_EQ(call(t.function, 5), t.original(5) + 1000);
        ASSERT_TRUE(hook->remove());
      } else {
        EXPECT_FALSE(hook->installed());
      }
      ASSERT_EQ(original.differences(), "");
      ASSERT_EQ(call(t.function, 5), t.original(5));
      misses = fired ? 0 : misses + 1;
      if (misses == kMissesToStop) break;
    }
  }
  EXPECT_GT(failed, 0) << "no injected fault made a removal fail";
}

// A second hook wrapping the first: its link stub, the entry retarget and
// (when removed) the inner hook's restoration fail at every step in turn.
TEST_P(HookFault, EveryNthFailureInAChainedInstallAndRemoval) {
  const Target& t = kTargets[0];
  auto inner = install_inner(t.function);
  ASSERT_TRUE(inner) << inner.error().describe();
  const test::MemorySnapshot inner_only(reinterpret_cast<void*>(t.function), 32);
  const long inner_value = t.original(5) + 1000;
  int failed = 0, misses = 0;
  for (std::uint64_t n = 1;; ++n) {
    ASSERT_LE(n, kMaxOperations);
    SCOPED_TRACE("operation #" + std::to_string(n) + " fails");
    Result<Hook> outer = fail(ErrorCode::kInvalidArgument, "not run");
    bool fired = with_fault(n, [&] { outer = install_outer(t.function); });
    if (!outer) {
      ++failed;
      misses = 0;
      ASSERT_EQ(inner_only.differences(), "") << outer.error().describe();
      ASSERT_EQ(call(t.function, 5), inner_value);
      continue;
    }
    ASSERT_EQ(call(t.function, 5), 2 * inner_value);
    const test::MemorySnapshot both(reinterpret_cast<void*>(t.function), 32);
    Status removed;
    fired = with_fault(n, [&] { removed = outer->remove(); }) || fired;
    if (!removed) {
      ++failed;
      ASSERT_EQ(both.differences(), "") << removed.error().describe();
      ASSERT_EQ(call(t.function, 5), 2 * inner_value);
      ASSERT_TRUE(outer->remove());
    }
    ASSERT_EQ(inner_only.differences(), "");
    ASSERT_EQ(call(t.function, 5), inner_value);
    misses = fired ? 0 : misses + 1;
    if (misses == kMissesToStop) break;
  }
  EXPECT_GT(failed, 0);
  ASSERT_TRUE(inner->remove());
}

INSTANTIATE_TEST_SUITE_P(WriteAndSync, HookFault, test::fault_cases(), test::fault_case_name);

}  // namespace
}  // namespace punch::patcher
