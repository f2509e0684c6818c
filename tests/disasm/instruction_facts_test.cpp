// The instruction facts the patcher decides with: whether code falls through,
// is a nop, can run from a copy as its bytes, can be entered in its middle,
// or can leave a copy. A wrong answer lets a patch copy code that then runs
// with wrong addresses, or leaves a thread stranded, so each is pinned on the
// instruction forms that decide it.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include <punch/disasm/instruction_facts.hpp>

namespace punch::disasm {
namespace {

constexpr std::uintptr_t kAt = 0x401000;

Instruction one(std::vector<std::uint8_t> bytes) {
  auto insn = decode({kAt, bytes}, kAt);
  EXPECT_TRUE(insn) << insn.error().describe();
  return insn ? *insn : Instruction{};
}

std::vector<Instruction> all(const std::vector<std::uint8_t>& bytes) {
  auto insns = decode_all({kAt, bytes});
  EXPECT_TRUE(insns) << insns.error().describe();
  return insns ? *insns : std::vector<Instruction>{};
}

TEST(InstructionFacts, OnlyJumpsReturnsAndTrapsDoNotFallThrough) {
  EXPECT_FALSE(falls_through(one({0xE9, 0, 0, 0, 0})));  // jmp rel32
  EXPECT_FALSE(falls_through(one({0xEB, 0})));           // jmp rel8
  EXPECT_FALSE(falls_through(one({0xFF, 0xE0})));        // jmp rax
  EXPECT_FALSE(falls_through(one({0xC3})));              // ret
  EXPECT_FALSE(falls_through(one({0xCC})));              // int3
  EXPECT_FALSE(falls_through(one({0x0F, 0x0B})));        // ud2
  EXPECT_TRUE(falls_through(one({0x74, 0})));            // je: may fall through
  EXPECT_TRUE(falls_through(one({0xE8, 0, 0, 0, 0})));   // call returns here
  EXPECT_TRUE(falls_through(one({0x48, 0x89, 0xE5})));   // mov rbp, rsp
}

TEST(InstructionFacts, ANopIsPaddingThatIsNotInt3) {
  EXPECT_TRUE(is_nop(one({0x90})));
  EXPECT_TRUE(is_nop(one({0x0F, 0x1F, 0x44, 0x00, 0x00})));  // nop dword [rax+rax]
  EXPECT_TRUE(is_nop(one({0x66, 0x2E, 0x0F, 0x1F, 0x84, 0, 0, 0, 0, 0})));
  EXPECT_FALSE(is_nop(one({0xCC})));                    // int3 pads too, but traps
  EXPECT_FALSE(is_nop(one({0xF3, 0x0F, 0x1E, 0xFA})));  // endbr64
  EXPECT_FALSE(is_nop(one({0x48, 0x89, 0xE5})));
}

TEST(InstructionFacts, RunsAnywhereOnlyWithoutRelativeFieldsCallsOrSyscalls) {
  EXPECT_TRUE(runs_anywhere(one({0x48, 0x89, 0xE5})));               // mov rbp, rsp
  EXPECT_TRUE(runs_anywhere(one({0x55})));                           // push rbp
  EXPECT_TRUE(runs_anywhere(one({0xC3})));                           // ret: same wherever it runs
  EXPECT_TRUE(runs_anywhere(one({0xFF, 0xE0})));                     // jmp rax: an absolute target
  EXPECT_FALSE(runs_anywhere(one({0x48, 0x8B, 0x05, 1, 0, 0, 0})));  // mov rax, [rip+1]
  EXPECT_FALSE(runs_anywhere(one({0xE9, 0, 0, 0, 0})));              // jmp rel32
  EXPECT_FALSE(runs_anywhere(one({0x74, 0})));                       // je rel8
  EXPECT_FALSE(runs_anywhere(one({0xE8, 0, 0, 0, 0})));              // call: return address in the copy
  EXPECT_FALSE(runs_anywhere(one({0xFF, 0xD0})));                    // call rax: the same
  EXPECT_FALSE(runs_anywhere(one({0x0F, 0x05})));                    // syscall
}

TEST(InstructionFacts, TheInteriorIsReachableUnlessTheFirstInstructionLeavesForGood) {
  // jmp +3 (to the end of this 5-byte jump + 3 = outside), then 3 bytes of int3.
  const std::vector<std::uint8_t> leaves{0xE9, 0x03, 0, 0, 0, 0xCC, 0xCC, 0xCC};
  EXPECT_FALSE(interior_reachable({kAt, leaves}, all(leaves)));
  const std::vector<std::uint8_t> returns{0xC3, 0x90, 0x90};
  EXPECT_FALSE(interior_reachable({kAt, returns}, all(returns)));
  // jmp +1 lands on the second int3, inside the run.
  const std::vector<std::uint8_t> lands_inside{0xE9, 0x01, 0, 0, 0, 0xCC, 0xCC, 0xCC};
  EXPECT_TRUE(interior_reachable({kAt, lands_inside}, all(lands_inside)));
  const std::vector<std::uint8_t> falls{0x55, 0x48, 0x89, 0xE5};
  EXPECT_TRUE(interior_reachable({kAt, falls}, all(falls)));
  const std::vector<std::uint8_t> single{0x48, 0x89, 0xE5};
  EXPECT_FALSE(interior_reachable({kAt, single}, all(single)));  // No interior between instructions.
}

TEST(InstructionFacts, CodeMayLeaveThroughBranchesOutsideOrIndirectOnes) {
  const std::vector<std::uint8_t> plain{0x55, 0x48, 0x89, 0xE5, 0xC3};
  EXPECT_FALSE(may_leave({kAt, plain}, all(plain)));   // ret goes back to a caller
  const std::vector<std::uint8_t> to_end{0x74, 0x00};  // je to its own end: falls through the end
  EXPECT_FALSE(may_leave({kAt, to_end}, all(to_end)));
  const std::vector<std::uint8_t> out{0x74, 0x02, 0x90};  // je one byte past the end
  EXPECT_TRUE(may_leave({kAt, out}, all(out)));
  const std::vector<std::uint8_t> back{0x90, 0xEB, 0xFC};  // jmp before the start
  EXPECT_TRUE(may_leave({kAt, back}, all(back)));
  const std::vector<std::uint8_t> indirect{0xFF, 0xD0};  // call rax
  EXPECT_TRUE(may_leave({kAt, indirect}, all(indirect)));
  const std::vector<std::uint8_t> call{0xE8, 0x10, 0, 0, 0};
  EXPECT_TRUE(may_leave({kAt, call}, all(call)));
}

}  // namespace
}  // namespace punch::disasm
