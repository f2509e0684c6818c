// The hook planner and trampoline builder, without any live patch: which
// entries a hook may take, which it refuses and why, and whether a trampoline
// called directly behaves exactly like the original function.
#include <gtest/gtest.h>

#include <string>

#include <punch/runtime/code_heap.hpp>

#include "hook_targets.hpp"
#include "hook_planner.hpp"
#include "hook_trampoline.hpp"
#include "disasm_corpus.hpp"
#include "memory_snapshot.hpp"

namespace punch::patcher {
namespace {

using detail::EntryPlan;

std::uintptr_t address_of(long (*f)(long)) { return reinterpret_cast<std::uintptr_t>(f); }

runtime::CodeHeap& heap() {
  auto h = runtime::CodeHeap::global();
  EXPECT_TRUE(h) << h.error().describe();
  return **h;
}

// Calls a trampoline as the function it copies.
long call(const detail::CodeBlock& block, long x) { return reinterpret_cast<long (*)(long)>(block.address)(x); }

TEST(HookPlanner, StealsWholeInstructionsAfterEndbr64) {
  auto plan = detail::plan_stolen_entry(address_of(hook_target_prologue), detail::kRel32JumpSize);
  ASSERT_TRUE(plan) << plan.error().describe();
  EXPECT_TRUE(plan->endbr64);
  EXPECT_EQ(plan->entry, address_of(hook_target_prologue) + 4);
  // push rbp (1) + mov rbp, rsp (3) + lea rax, [rdi+rdi*2] (4): the first boundary at or past 5 bytes.
  EXPECT_EQ(plan->size(), 8u);
  EXPECT_EQ(plan->instructions.size(), 3u);
  EXPECT_EQ(plan->kind, HookEntryKind::kStolenRel32);
}

TEST(HookPlanner, AbsoluteFormStealsSixteenBytes) {
  auto plan = detail::plan_stolen_entry(address_of(hook_target_prologue), detail::kAbsoluteEntrySize);
  ASSERT_TRUE(plan) << plan.error().describe();
  EXPECT_GE(plan->size(), detail::kAbsoluteEntrySize);
  EXPECT_EQ(plan->kind, HookEntryKind::kStolenAbsolute);
}

TEST(HookPlanner, FindsPatchablePads) {
  auto clang_pad = detail::plan_patchable_entry(address_of(hook_target_pad_nop5));
  ASSERT_TRUE(clang_pad) << clang_pad.error().describe();
  EXPECT_EQ(clang_pad->size(), 5u);
  EXPECT_EQ(clang_pad->instructions.size(), 1u);  // A single-instruction site.
  EXPECT_EQ(clang_pad->kind, HookEntryKind::kPatchableEntry);

  auto gcc_pad = detail::plan_patchable_entry(address_of(hook_target_pad_gcc));
  ASSERT_TRUE(gcc_pad) << gcc_pad.error().describe();
  EXPECT_TRUE(gcc_pad->endbr64);
  EXPECT_EQ(gcc_pad->entry, address_of(hook_target_pad_gcc) + 4);
  EXPECT_EQ(gcc_pad->size(), 5u);

  auto none = detail::plan_patchable_entry(address_of(hook_target_prologue));
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, ErrorCode::kUnprovable);
  EXPECT_NE(none.error().message.find("no patchable entry pad"), std::string::npos) << none.error().message;
}

TEST(HookPlanner, RefusesACallThatIsNotTheLastStolenInstruction) {
  auto plan = detail::plan_stolen_entry(address_of(hook_target_call_mid), detail::kRel32JumpSize);
  ASSERT_FALSE(plan);
  EXPECT_EQ(plan.error().code, ErrorCode::kCannotRelocate);
  EXPECT_NE(plan.error().message.find(at(address_of(hook_target_call_mid) + 2)), std::string::npos)
      << plan.error().message;
}

TEST(HookPlanner, RefusesCodeWithoutAKnownExtent) {
  // A heap address has no ELF symbol: without HookOptions::function nothing can be proven.
  auto block = heap().allocate(64);
  ASSERT_TRUE(block) << block.error().describe();
  auto plan = detail::plan_stolen_entry(*block, detail::kRel32JumpSize);
  ASSERT_FALSE(plan);
  EXPECT_EQ(plan.error().code, ErrorCode::kUnprovable);
  EXPECT_NE(plan.error().message.find("HookOptions::function"), std::string::npos) << plan.error().message;
  ASSERT_TRUE(heap().free(*block));
}

TEST(HookTrampoline, PatchablePadTrampolineSkipsThePad) {
  auto plan = detail::plan_patchable_entry(address_of(hook_target_pad_gcc));
  ASSERT_TRUE(plan) << plan.error().describe();
  auto block = detail::build_trampoline(*plan, false, heap());
  ASSERT_TRUE(block) << block.error().describe();
  for (long x = -5; x <= 5; ++x) EXPECT_EQ(call(*block, x), x + 200);
  ASSERT_TRUE(heap().free(block->address));
}

TEST(HookTrampoline, LinkStubAndRelayLeadToTheirTarget) {
  auto stub = detail::build_link_stub(address_of(hook_target_square), heap());
  ASSERT_TRUE(stub) << stub.error().describe();
  EXPECT_EQ(call(*stub, 9), 80);
  auto relay = detail::build_relay(stub->address, address_of(hook_target_prologue), heap());
  ASSERT_TRUE(relay) << relay.error().describe();
  EXPECT_EQ(call(*relay, 2), 13);
  ASSERT_TRUE(heap().free(stub->address));
  ASSERT_TRUE(heap().free(relay->address));
}

// The corpus of tricky entries: each case is either refused with the reason the
// corpus documents (and memory untouched), or its trampoline called directly
// computes exactly what the original does.
TEST(HookTrampoline, CorpusTrampolinesBehaveLikeTheOriginalOrAreRefused) {
  for (const auto& c : test::disasm_corpus()) {
    SCOPED_TRACE(c.name);
    const auto target = address_of(c.function);
    test::MemorySnapshot before(target, 32);
    // The corpus judges a patch of `run` bytes; a hook steals only up to 5 bytes after
    // endbr64: call_mid's call is then the last stolen instruction (allowed), syscall's
    // 5-byte mov is stolen without the syscall (allowed), and tiny_ret is followed by
    // another symbol, not padding (refused).
    const std::string name = c.name;
    const bool stolen_run_differs = name == "call_mid" || name == "syscall";
    const bool refuse =
        c.branch_into_run || c.indirect_jump || (!c.relocatable && !stolen_run_differs) || name == "tiny_ret";

    auto plan = detail::plan_stolen_entry(target, detail::kRel32JumpSize);
    Result<detail::CodeBlock> block = plan ? detail::build_trampoline(*plan, false, heap())
                                           : Result<detail::CodeBlock>(tl::unexpected<Error>(plan.error()));
    EXPECT_EQ(before.differences(), "");
    if (refuse) {
      ASSERT_FALSE(block) << "hooking " << c.name << " should be refused";
      EXPECT_NE(block.error().message.find("0x"), std::string::npos) << block.error().message;
      if (c.branch_into_run) {
        EXPECT_EQ(block.error().code, ErrorCode::kBranchInto) << block.error().describe();
      }
      if (c.indirect_jump) {
        EXPECT_EQ(block.error().code, ErrorCode::kUnprovable) << block.error().describe();
      }
      continue;
    }
    ASSERT_TRUE(block) << block.error().describe();
    for (long x = 1; c.callable && x <= 100; ++x) ASSERT_EQ(call(*block, x), c.function(x)) << "x = " << x;
    ASSERT_TRUE(heap().free(block->address));
  }
}

}  // namespace
}  // namespace punch::patcher
