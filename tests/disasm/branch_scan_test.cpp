// The branch scan's one rule (branch_scan.hpp), on hand-written bytes: direct
// branches into a range, indirect jumps (outside a range, inside one, and as a
// range's only instruction), several ranges, and code that does not decode.
#include <gtest/gtest.h>

#include <vector>

#include <punch/disasm/branch_scan.hpp>

namespace punch::disasm {
namespace {

constexpr std::uintptr_t kBase = 0x401000;

std::vector<std::uintptr_t> branch_sources(const BranchScan& scan) {
  std::vector<std::uintptr_t> out;
  for (const BranchInto& b : scan.branches_into) out.push_back(b.branch);
  return out;
}

// push rbp; jne +3; jmp rel32; jrcxz -2; call rel32; jmp rax; ret
const std::vector<std::uint8_t> kCode = {
    0x55,                          // 0x00 push rbp
    0x75, 0x03,                    // 0x01 jne 0x06 (inside the jmp at 0x03)
    0xe9, 0x00, 0x01, 0x00, 0x00,  // 0x03 jmp +0x100
    0xe3, 0xfe,                    // 0x08 jrcxz 0x08 (itself)
    0xe8, 0x10, 0x00, 0x00, 0x00,  // 0x0a call +0x10
    0xff, 0xe0,                    // 0x0f jmp rax
    0xc3,                          // 0x11 ret
};
const CodeSpan kSpan{kBase, kCode};

TEST(BranchScan, FindsDirectBranchesStrictlyInsideTheRangeFromOutsideIt) {
  auto scan = scan_branches(kSpan, kBase + 0x03, kBase + 0x08);
  ASSERT_TRUE(scan) << scan.error().describe();
  ASSERT_EQ(scan->branches_into.size(), 1u);
  EXPECT_EQ(scan->branches_into[0].branch, kBase + 0x01);
  EXPECT_EQ(scan->branches_into[0].target, kBase + 0x06);
  EXPECT_EQ(scan->branches_into[0].range, 0u);
  EXPECT_TRUE(scan->complete);

  auto at_start = scan_branches(kSpan, kBase + 0x06, kBase + 0x08);  // Not a boundary, but lands at the start: fine.
  ASSERT_TRUE(at_start);
  EXPECT_TRUE(at_start->branches_into.empty());

  // The jrcxz at 0x08 branches to itself: inside its own range, relocated with it.
  auto own = scan_branches(kSpan, kBase + 0x03, kBase + 0x0a);
  ASSERT_TRUE(own);
  EXPECT_EQ(branch_sources(*own), std::vector<std::uintptr_t>{kBase + 0x01});
}

// An indirect jump outside the range may land anywhere in it.
TEST(BranchScan, AnIndirectJumpOutsideTheRangeIsReported) {
  auto scan = scan_branches(kSpan, kBase + 0x08, kBase + 0x0f);
  ASSERT_TRUE(scan);
  EXPECT_EQ(scan->indirect_jumps, std::vector<std::uintptr_t>{kBase + 0x0f});
  EXPECT_TRUE(scan->unprovable());
}

// An indirect jump inside a range of several instructions may aim at a later
// one of them (a jump table's first case after its `jmp`), and a hook's
// trampoline or a copy still runs it: reported like any other. (Before the
// one scan, both callers dropped indirect jumps inside the replaced range.)
TEST(BranchScan, AnIndirectJumpInsideARangeOfSeveralInstructionsIsReported) {
  auto scan = scan_branches(kSpan, kBase + 0x0a, kBase + 0x12);  // call; jmp rax; ret
  ASSERT_TRUE(scan);
  EXPECT_EQ(scan->indirect_jumps, std::vector<std::uintptr_t>{kBase + 0x0f});
  auto last = scan_branches(kSpan, kBase + 0x0a, kBase + 0x11);  // call; jmp rax: it may aim back at itself.
  ASSERT_TRUE(last);
  EXPECT_EQ(last->indirect_jumps, std::vector<std::uintptr_t>{kBase + 0x0f});
}

// A range that is one indirect jump has no instruction boundary inside it for that jump to reach.
TEST(BranchScan, AnIndirectJumpThatIsItsRangesOnlyInstructionIsNotReported) {
  auto scan = scan_branches(kSpan, kBase + 0x0f, kBase + 0x11);
  ASSERT_TRUE(scan);
  EXPECT_TRUE(scan->indirect_jumps.empty());
  EXPECT_FALSE(scan->unprovable());
}

// `jmp [rip+x]` through a slot in the scanned bytes goes where the slot says:
// checked like a direct branch, not unprovable (punch's absolute jumps).
TEST(BranchScan, AnIndirectJumpThroughASlotInTheCodeIsADirectBranchToItsValue) {
  // clang-format off
  std::vector<std::uint8_t> code = {
      0xff, 0x25, 0x02, 0x00, 0x00, 0x00,  // 0x00 jmp [rip+2] (the slot at 0x08)
      0x66, 0x90,                          // 0x06 xchg ax, ax
      0, 0, 0, 0, 0, 0, 0, 0,              // 0x08 the slot
      0x90, 0x90, 0xc3,                    // 0x10 nop; nop; ret
  };
  // clang-format on
  const auto set_slot = [&](std::uintptr_t target) {
    for (int b = 0; b < 8; ++b) code[0x08 + b] = static_cast<std::uint8_t>(target >> (8 * b));
  };
  const CodeSpan span{kBase, code};
  set_slot(kBase + 0x11);  // Strictly inside [0x10, 0x12).
  auto into = scan_branches(span, kBase + 0x10, kBase + 0x12);
  ASSERT_TRUE(into) << into.error().describe();
  EXPECT_EQ(branch_sources(*into), std::vector<std::uintptr_t>{kBase});
  EXPECT_TRUE(into->indirect_jumps.empty());
  set_slot(0x7000);  // Elsewhere: nothing to report.
  auto away = scan_branches(span, kBase + 0x10, kBase + 0x12);
  ASSERT_TRUE(away);
  EXPECT_TRUE(away->branches_into.empty());
  EXPECT_TRUE(away->indirect_jumps.empty());  // (The slot's own bytes may not decode: that is another matter.)
}

// Several ranges: a branch from one range into another is found (its source
// is outside the range it lands in), and each finding names its range.
TEST(BranchScan, SeveralRangesOverDecodedInstructions) {
  auto insns = decode_all(kSpan);
  ASSERT_TRUE(insns);
  const std::vector<PatchRange> ranges = {{kBase + 0x01, kBase + 0x03}, {kBase + 0x03, kBase + 0x08}};
  const BranchScan scan = scan_branches(kSpan, *insns, ranges, true);
  ASSERT_EQ(scan.branches_into.size(), 1u);
  EXPECT_EQ(scan.branches_into[0].branch, kBase + 0x01);
  EXPECT_EQ(scan.branches_into[0].range, 1u);
  EXPECT_EQ(scan.indirect_jumps, std::vector<std::uintptr_t>{kBase + 0x0f});
  EXPECT_FALSE(scan_branches(kSpan, *insns, ranges, false).complete);
}

TEST(BranchScan, UndecodableBytesMakeTheScanIncompleteAndBadRangesAreRefused) {
  std::vector<std::uint8_t> junk = {0x55, 0x06};  // push rbp; an opcode invalid in 64-bit mode
  auto partial = scan_branches(CodeSpan{kBase, junk}, kBase, kBase + 1);
  ASSERT_TRUE(partial);
  EXPECT_FALSE(partial->complete);
  EXPECT_TRUE(partial->unprovable());
  EXPECT_EQ(scan_branches(kSpan, kBase + 0x03, kBase + 0x100).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(scan_branches(kSpan, kBase + 0x03, kBase + 0x03).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(scan_branches(CodeSpan{kBase, {}}, kBase, kBase + 1).error().code, ErrorCode::kInvalidArgument);
}

// A jmp [rip+x] whose slot lies past the end of the scanned bytes is an
// unknown target (an indirect jump), never read: the bound once wrapped and
// fuzz_transaction read beyond the bytes.
TEST(BranchScan, AJumpThroughASlotPastTheEndIsAnIndirectJump) {
  const std::vector<std::uint8_t> code = {
      0x90,                                // 0x00 nop
      0xff, 0x25, 0x40, 0x00, 0x00, 0x00,  // 0x01 jmp [rip+0x40]: its slot is far past the end
      0x90,                                // 0x07 nop
  };
  auto scan = scan_branches(CodeSpan{kBase, code}, kBase, kBase + 1);
  ASSERT_TRUE(scan) << scan.error().describe();
  EXPECT_TRUE(scan->branches_into.empty());
  EXPECT_EQ(scan->indirect_jumps, std::vector<std::uintptr_t>{kBase + 0x01});
}

}  // namespace
}  // namespace punch::disasm
