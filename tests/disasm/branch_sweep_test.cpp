// The branch sweep: every direct branch of a stretch of code, found by a
// linear decode that steps over bytes it cannot decode.
#include <gtest/gtest.h>

#include <vector>

#include <punch/disasm/branch_sweep.hpp>

namespace punch::disasm {

void PrintTo(const DirectBranch& b, std::ostream* os) {
  *os << std::hex << "{0x" << b.source << " -> 0x" << b.target << "}";
}

namespace {

constexpr std::uintptr_t kBase = 0x7000;

std::vector<DirectBranch> sweep(const std::vector<std::uint8_t>& bytes, SweepCounts* counts = nullptr) {
  std::vector<DirectBranch> out;
  const SweepCounts c = sweep_direct_branches({kBase, bytes}, out);
  if (counts) *counts = c;
  return out;
}

// Every form of direct branch is found, with its source and its target;
// indirect jumps and calls, returns and plain instructions are not.
TEST(BranchSweep, FindsEveryFormOfDirectBranch) {
  const std::vector<std::uint8_t> code = {
      0xeb, 0x02,                                // 0x00 jmp rel8 -> 0x04
      0x74, 0xfc,                                // 0x02 je rel8 -> 0x00
      0xe9, 0x00, 0x01, 0x00, 0x00,              // 0x04 jmp rel32 -> 0x109
      0x0f, 0x85, 0xf6, 0xff, 0xff, 0xff,        // 0x09 jne rel32 -> 0x05 (0x0f - 10)
      0xe8, 0x10, 0x00, 0x00, 0x00,              // 0x0f call rel32 -> 0x24
      0xe2, 0xfe,                                // 0x14 loop -> 0x14
      0xe3, 0x00,                                // 0x16 jrcxz -> 0x18
      0xc7, 0xf8, 0x10, 0x00, 0x00, 0x00,        // 0x18 xbegin -> 0x2e (abort handler)
      0xff, 0xe0,                                // 0x1e jmp rax (indirect: not reported)
      0xff, 0x15, 0x00, 0x00, 0x00, 0x00,        // 0x20 call [rip] (indirect: not reported)
      0x48, 0x8b, 0x05, 0x00, 0x00, 0x00, 0x00,  // 0x26 mov rax, [rip] (data, not a branch)
      0xc3,                                      // 0x2d ret
  };
  SweepCounts counts;
  const auto found = sweep(code, &counts);
  const std::vector<DirectBranch> expected = {
      {kBase + 0x00, kBase + 0x04}, {kBase + 0x02, kBase + 0x00}, {kBase + 0x04, kBase + 0x109},
      {kBase + 0x09, kBase + 0x05}, {kBase + 0x0f, kBase + 0x24}, {kBase + 0x14, kBase + 0x14},
      {kBase + 0x16, kBase + 0x18}, {kBase + 0x18, kBase + 0x2e},
  };
  EXPECT_EQ(found, expected);
  EXPECT_EQ(counts.instructions, 12u);
  EXPECT_EQ(counts.skipped, 0u);
}

// Results are appended: one vector can collect several segments.
TEST(BranchSweep, AppendsToWhatIsThere) {
  std::vector<DirectBranch> out = {{1, 2}};
  const std::vector<std::uint8_t> code = {0xeb, 0x00};
  sweep_direct_branches({kBase, code}, out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1], (DirectBranch{kBase, kBase + 2}));
}

// An undecodable byte is stepped over alone and the sweep goes on: a branch
// after data is still found. A branch cut off by the span's end is none.
TEST(BranchSweep, StepsOverUndecodableBytesAndKeepsGoing) {
  const std::vector<std::uint8_t> data_then_jump = {0x06, 0x07, 0xeb,
                                                    0x10};  // push es; pop es (invalid in 64-bit); jmp
  SweepCounts counts;
  const auto found = sweep(data_then_jump, &counts);
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0], (DirectBranch{kBase + 2, kBase + 4 + 0x10}));
  EXPECT_EQ(counts.skipped, 2u);

  const std::vector<std::uint8_t> cut = {0x90, 0xe9, 0x00, 0x01};  // nop; jmp rel32 missing two bytes
  EXPECT_TRUE(sweep(cut, &counts).empty());
  EXPECT_EQ(counts.skipped, 1u);       // e9 alone
  EXPECT_EQ(counts.instructions, 2u);  // nop, then `add [rcx], al` (00 01)
}

// A linear sweep decodes data as instructions: text that happens to look
// like `js rel8` is reported as a branch. The sweep is for "might something
// branch here?", so a false branch is allowed; a missed one is not.
TEST(BranchSweep, DataThatLooksLikeABranchIsReported) {
  const std::vector<std::uint8_t> ascii = {'x', '8', '6'};  // 78 38 = js +0x38, then 36 (ss prefix) alone
  SweepCounts counts;
  const auto found = sweep(ascii, &counts);
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0], (DirectBranch{kBase, kBase + 2 + 0x38}));
}

// An empty span finds nothing.
TEST(BranchSweep, EmptySpanFindsNothing) {
  SweepCounts counts;
  EXPECT_TRUE(sweep({}, &counts).empty());
  EXPECT_EQ(counts.instructions, 0u);
}

// clang's -fsanitize=function signatures are data among code: decoded as
// code, the type bytes of `eb 06 76 32 e0 f1 00 01` read as `loopne` back
// into the function before (a hook on it was refused, found under ASan). The
// sweep steps over both forms whole; the signature's own jump is still a branch.
TEST(BranchSweep, StepsOverClangFunctionSignatures) {
  const std::vector<std::uint8_t> before_clang_17 = {
      0x48, 0x83, 0xc0, 0x01,                          // 0x00 add rax, 1 (the function before)
      0xc3,                                            // 0x04 ret
      0xcc, 0xcc, 0xcc,                                // 0x05 padding
      0xeb, 0x06, 0x76, 0x32, 0xe0, 0xf1, 0x00, 0x01,  // 0x08 jmp .+8; "v2"; type offset
      0x55,                                            // 0x10 push rbp
      0xc3,                                            // 0x11 ret
  };
  SweepCounts counts;
  EXPECT_EQ(sweep(before_clang_17, &counts), (std::vector<DirectBranch>{{kBase + 0x08, kBase + 0x10}}));
  EXPECT_EQ(counts.signatures, 1u);

  const std::vector<std::uint8_t> from_clang_17 = {
      0xc3,                                            // 0x00 ret
      0xfe, 0xca, 0x05, 0xc1, 0x12, 0x74, 0xf0, 0x00,  // 0x01 0xc105cafe, a hash with `je` in it
      0x55, 0xc3,                                      // 0x09 push rbp; ret
  };
  EXPECT_TRUE(sweep(from_clang_17, &counts).empty());
  EXPECT_EQ(counts.signatures, 1u);

  // The same bytes anywhere they are not a whole signature are decoded as usual.
  const std::vector<std::uint8_t> cut = {0xeb, 0x06, 0x76, 0x32};  // Too short to hold one.
  EXPECT_EQ(sweep(cut, &counts), (std::vector<DirectBranch>{{kBase, kBase + 8}, {kBase + 2, kBase + 0x36}}));
  EXPECT_EQ(counts.signatures, 0u);
}

}  // namespace
}  // namespace punch::disasm
