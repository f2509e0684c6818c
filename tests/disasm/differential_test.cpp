// The Unicorn differential harness itself: what it rules out of scope (with
// the fuzzer findings that were harness artifacts, not relocation bugs) and
// that it still catches a wrong relocation.
#include <gtest/gtest.h>

#include <algorithm>
#include <iterator>

#include <punch/disasm/relocate.hpp>

#include "differential.hpp"
#include "mnemonic.hpp"

namespace punch::disasm {
namespace {

constexpr std::uint64_t kA = 0x555555554000;
constexpr std::uint64_t kNear = kA + 0x10000;  // Where fuzz_relocate puts a near copy.
constexpr std::uint64_t kData = kA - 0x3000;

test::CpuState quiet_state() {
  test::CpuState s;
  for (auto& r : s.gpr) r = kData;  // Every memory operand hits data.
  s.gpr[4] = test::kStackTop - 0x1000;
  return s;
}

// Original bytes at A (the run is their first `run` bytes), the copy at relocation.address.
test::Layout layout_for(const std::vector<std::uint8_t>& bytes, const Relocation& relocation) {
  test::Layout layout;
  layout.a = kA;
  layout.original = bytes;
  layout.b = relocation.address;
  layout.relocated = relocation.bytes;
  return layout;
}

test::Outcome run_original(const test::Layout& layout, std::size_t run, const test::CpuState& state) {
  return test::emulate(layout, kA, kA, kA + run, state, 500);
}

std::uint64_t copy_end(const test::Layout& layout) { return layout.b + layout.relocated.size(); }

//! Runs the copy and compares it with `original`: empty when they behaved the same.
std::string run_copy_and_compare(const test::Layout& layout, std::size_t run, const test::Outcome& original,
                                 const test::CpuState& state) {
  const auto moved = test::emulate(layout, layout.b, layout.b, copy_end(layout), state, 5000);
  return test::compare(original, moved, kA + run, copy_end(layout));
}

// Every test here runs code in Unicorn.
class Differential : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string refused = test::unicorn_refused_here(); !refused.empty()) GTEST_SKIP() << refused;
  }
};

// fuzz_relocate finding: `pop rsp; sub [rax], eax; jp ..; pop rsp; sub [rax], eax;
// add [rip+0], cl; add [r14], r13b` (4f prefixes). The `add [rip+0], cl` rewrites
// the first byte of the next instruction: the original then ran `push rbx`, the
// copy its own unmodified bytes, so rsp differed. Relocation was right (the copy's
// add writes the same absolute byte); the harness now maps code read+execute and
// reports the write as out of scope instead of a divergence.
TEST_F(Differential, SelfModifyingRunIsOutOfScope) {
  const std::vector<std::uint8_t> bytes = {0x5c, 0x29, 0x00, 0x7a, 0x50, 0x5c, 0x29, 0x00, 0x00, 0x0d,
                                           0x00, 0x00, 0x00, 0x00, 0x4f, 0x4f, 0x4f, 0x4f, 0x00, 0x2e};
  const CodeSpan source{kA, bytes};
  auto relocation = relocate(source, kNear);
  ASSERT_TRUE(relocation) << relocation.error().describe();

  // The copy's `add [rip+disp], cl` names the copy's own byte, as the
  // original names its own: the run works as a unit at any address.
  auto add = decode(source, kA + 8);
  ASSERT_TRUE(add);
  ASSERT_TRUE(add->has_memory_target);
  EXPECT_EQ(add->memory_target, kA + 14);
  const CodeSpan moved{relocation->address, relocation->bytes};
  auto moved_add = decode(moved, relocation->address + relocation->offsets[5].new_offset);
  ASSERT_TRUE(moved_add) << moved_add.error().describe();
  EXPECT_EQ(punch::test::mnemonic_at(moved, moved_add->address), "add");
  EXPECT_EQ(moved_add->memory_target, relocation->address + relocation->offsets[6].new_offset);

  // As in the fuzzer's run: `sub [rax], eax` leaves PF clear (0 - 0x5555110e
  // ends in 0xf2), so `jp` falls through; cl = 4 turns 0x4f into 0x53 (push rbx).
  test::CpuState state = quiet_state();
  state.gpr[0] = kData + 0x10e;
  state.gpr[1] = 4;
  const test::Layout layout = layout_for(bytes, *relocation);
  const auto original = run_original(layout, bytes.size(), state);
  EXPECT_FALSE(original.completed);
  EXPECT_TRUE(original.wrote_code);
  EXPECT_NE(original.failure.find("wrote code at 0x55555555400e"), std::string::npos) << original.failure;
  EXPECT_NE(test::out_of_scope(original, layout.b, copy_end(layout)), "");
}

// fuzz_relocate findings: a final `call +0x10000` whose target, A + 0x10010
// or A + 0x1000b, is inside the near copy at A + 0x10000. The original left the
// run there while the copy kept executing its own bytes (a step-limit
// "divergence"); or Unicorn translated the copy's bytes from that misaligned
// entry (`ff e8`, invalid) and aborted in TCG. No real branch targets a
// trampoline's fresh memory: the copy's pages are off limits to the original
// run, which stops there, out of scope.
TEST_F(Differential, BranchIntoTheCopysRangeIsOutOfScope) {
  const std::vector<std::uint8_t> inputs[] = {
      // gs call next; or dh, [rbp+0x2e]; je ..; call +0x10000
      {0x65, 0xe8, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x75, 0x2e, 0x74, 0x65, 0xe8, 0x00, 0x00, 0x01, 0x00},
      // gs cs je ..; js ..; call +0x10000
      {0x65, 0x2e, 0x74, 0x65, 0x78, 0x74, 0xe8, 0x00, 0x00, 0x01, 0x00},
  };
  for (const auto& bytes : inputs) {
    SCOPED_TRACE(test::hex_dump(bytes));
    test::CpuState state = quiet_state();
    state.rflags = 0x202;  // ZF and SF clear: `je`/`js` fall through to the call.
    auto relocation = relocate(CodeSpan{kA, bytes}, kNear);
    ASSERT_TRUE(relocation) << relocation.error().describe();
    const test::Layout layout = layout_for(bytes, *relocation);
    const auto original = run_original(layout, bytes.size(), state);
    EXPECT_FALSE(original.completed);
    EXPECT_TRUE(original.touched_copy) << original.failure;
    EXPECT_NE(test::out_of_scope(original, layout.b, copy_end(layout)), "");

    // The same run copied elsewhere is in scope and behaves the same.
    auto elsewhere = relocate(CodeSpan{kA, bytes}, kA + 0x20000);
    ASSERT_TRUE(elsewhere) << elsewhere.error().describe();
    const test::Layout other = layout_for(bytes, *elsewhere);
    const auto again = run_original(other, bytes.size(), state);
    ASSERT_EQ(test::out_of_scope(again, other.b, copy_end(other)), "");
    EXPECT_EQ(again.exit, kA + bytes.size() + 0x10000);
    EXPECT_EQ(run_copy_and_compare(other, bytes.size(), again, state), "");
  }
}

// fuzz_relocate finding: identical instructions at A and B (rcl/sar/shr/rol by
// cl, insd, two loope, one expanded) ended with different CF, memory equal. With
// a write hook Unicorn takes its slow memory path and computed CF=1 for
// `shr byte [rbp+0x23], cl` shifting a zero byte at A only. The harness now
// compares memory after the run instead of hooking writes; this exact state
// must compare equal.
TEST_F(Differential, NoWriteHookArtifact) {
  const std::vector<std::uint8_t> bytes = {0xd2, 0xd2, 0xd2, 0x3b, 0xfd, 0xd2, 0xd2, 0xd2, 0x3b, 0xfd, 0xd2, 0xd2,
                                           0x20, 0x01, 0x00, 0x00, 0xd2, 0xd2, 0xd2, 0xd2, 0x6d, 0xe1, 0x23, 0x02,
                                           0xd2, 0xd2, 0xd2, 0x00, 0x20, 0x01, 0x00, 0x00, 0xd2, 0xd2, 0xd2, 0xd2,
                                           0x6d, 0x23, 0xe1, 0x02, 0xd2, 0xd2, 0xd2, 0x00, 0x55, 0x6d};
  auto relocation = relocate(CodeSpan{kA, bytes}, kNear);
  ASSERT_TRUE(relocation) << relocation.error().describe();
  test::CpuState state;
  const std::uint64_t gpr[16] = {kData + 0x5f1,
                                 2,
                                 kData + 0xa21,
                                 7,
                                 test::kStackTop - 0x1000,
                                 kData + 0xe0,
                                 0xe,
                                 9,
                                 kData + 0x6b0,
                                 9,
                                 kData + 0x89,
                                 0xf,
                                 4,
                                 kData + 0x935,
                                 0,
                                 8};
  std::copy(std::begin(gpr), std::end(gpr), state.gpr);
  state.rflags = 0xa06;
  const test::Layout layout = layout_for(bytes, *relocation);
  const auto original = run_original(layout, bytes.size(), state);
  ASSERT_EQ(test::out_of_scope(original, layout.b, copy_end(layout)), "");
  EXPECT_EQ(original.cpu.rflags & 1, 0u);  // shr of a zero byte clears CF; the rotates by cl = 0 keep it.
  EXPECT_EQ(run_copy_and_compare(layout, bytes.size(), original, state), "");
}

// fuzz_relocate finding (a harness bug): a final call relocated far pushes the
// copy's return address, which compare() replaces by the original's; with rsp
// at 2 the pushed qword wraps around address zero, and the replacement loop
// (`at < rsp + 8`) did nothing. mov rsp, rbx; call +0x10000.
TEST_F(Differential, FinalCallWithTheStackWrappingAroundZero) {
  const std::vector<std::uint8_t> bytes = {0x48, 0x89, 0xdc, 0xe8, 0x00, 0x00, 0x01, 0x00};
  auto relocation = relocate(CodeSpan{kA, bytes}, kA + (3ull << 30));
  ASSERT_TRUE(relocation) << relocation.error().describe();
  ASSERT_EQ(relocation->bytes.size(), 3u + 16u);  // The absolute call form.
  test::CpuState state = quiet_state();
  state.gpr[3] = 2;  // rbx: the new rsp; the call writes [2 - 8, 2).
  const test::Layout layout = layout_for(bytes, *relocation);
  const auto original = run_original(layout, bytes.size(), state);
  ASSERT_EQ(test::out_of_scope(original, layout.b, copy_end(layout)), "");
  EXPECT_EQ(original.cpu.gpr[4], ~std::uint64_t{5});  // 2 - 8
  EXPECT_EQ(run_copy_and_compare(layout, bytes.size(), original, state), "");
}

// fuzz_relocate finding (a relocation bug): `call next; ...; ret` in one run.
// The copy emulates the call by pushing the original return address (so
// call/pop PIC code computes original addresses), but then the `ret` returned
// to that address in the original run, which the patch replaces, while the
// original returned inside itself and went on. relocate now refuses it.
TEST_F(Differential, ReturnAfterAnInnerCallNextIsRefused) {
  // call next; ret   (the ret returns to itself in the original)
  const std::vector<std::uint8_t> bytes = {0xe8, 0x00, 0x00, 0x00, 0x00, 0xc3};
  auto relocation = relocate(CodeSpan{kA, bytes}, kNear);
  ASSERT_FALSE(relocation);
  EXPECT_EQ(relocation.error().code, ErrorCode::kCannotRelocate);
  EXPECT_EQ(relocation.error().message.rfind(at(kA + 5), 0), 0u) << relocation.error().describe();  // Names the ret.
  EXPECT_NE(relocation.error().message.find("inside the run"), std::string::npos) << relocation.error().describe();

  // A call-next as the last instruction pushes the address after the run: still relocated.
  const std::vector<std::uint8_t> last = {0x90, 0xe8, 0x00, 0x00, 0x00, 0x00};
  EXPECT_TRUE(relocate(CodeSpan{kA, last}, kNear));
}

// fuzz_relocate finding (a relocation bug): Zydis files `xbegin rel32` under
// COND_BR, so it was classified as a jcc and re-emitted as `ja rel32` (cc from
// its opcode 0xc7). It keeps its own encoding now, only the rel32 adjusted.
TEST_F(Differential, XbeginKeepsItsEncoding) {
  const std::vector<std::uint8_t> bytes = {0x90, 0xc7, 0xf8, 0x00, 0x01, 0x00, 0x00, 0x90};  // nop; xbegin +0x100; nop
  auto insn = decode(CodeSpan{kA, bytes}, kA + 1);
  ASSERT_TRUE(insn) << insn.error().describe();
  EXPECT_EQ(punch::test::mnemonic_at(CodeSpan{kA, bytes}, insn->address), "xbegin");
  EXPECT_EQ(insn->flow, Flow::kNone);
  EXPECT_TRUE(insn->has_branch_target);
  EXPECT_EQ(insn->branch_target, kA + 7 + 0x100);
  auto relocation = relocate(CodeSpan{kA, bytes}, kNear);
  ASSERT_TRUE(relocation) << relocation.error().describe();
  ASSERT_EQ(relocation->bytes.size(), bytes.size());
  auto moved = decode(CodeSpan{kNear, relocation->bytes}, kNear + 1);
  ASSERT_TRUE(moved) << moved.error().describe();
  EXPECT_EQ(punch::test::mnemonic_at(CodeSpan{kNear, relocation->bytes}, moved->address), "xbegin");
  EXPECT_EQ(moved->branch_target, kA + 7 + 0x100);
  // It has no absolute form: out of rel32 reach it is refused.
  auto far = relocate(CodeSpan{kA, bytes}, kA + (std::uint64_t{3} << 30));
  ASSERT_FALSE(far);
  EXPECT_EQ(far.error().code, ErrorCode::kOutOfRange);
}

// Reading code is in scope: `mov rax, [rip+0]` reads the 8 bytes after the run
// at A; the copy must read those same bytes, not what follows itself.
TEST_F(Differential, ReadingCodeStaysCompared) {
  const std::vector<std::uint8_t> run = {0x48, 0x8b, 0x05, 0x00, 0x00, 0x00, 0x00};
  std::vector<std::uint8_t> bytes = run;
  for (std::uint8_t b = 0x11; b <= 0x88; b += 0x11) bytes.push_back(b);  // The code after the run.
  auto relocation = relocate(CodeSpan{kA, run}, kNear);
  ASSERT_TRUE(relocation) << relocation.error().describe();
  const test::CpuState state = quiet_state();
  const test::Layout layout = layout_for(bytes, *relocation);
  const auto original = run_original(layout, run.size(), state);
  ASSERT_EQ(test::out_of_scope(original, layout.b, copy_end(layout)), "");
  EXPECT_EQ(original.cpu.gpr[0], 0x8877665544332211u);
  EXPECT_EQ(run_copy_and_compare(layout, run.size(), original, state), "");

  // A copy that kept the displacement reads the zeros after itself: caught.
  Relocation verbatim = *relocation;
  verbatim.bytes = run;
  EXPECT_NE(run_copy_and_compare(layout_for(bytes, verbatim), run.size(), original, state), "");
}

// The harness is sensitive: a copy whose jcc has the inverted condition, or
// whose RIP-relative load was not retargeted, is reported on some input.
TEST_F(Differential, CatchesAWrongRelocation) {
  // cmp rdi, 5; je +3; inc rax; add rax, [rip+0x1000]   (data on the page after A)
  const std::vector<std::uint8_t> bytes = {0x48, 0x83, 0xff, 0x05, 0x74, 0x03, 0x48, 0xff,
                                           0xc0, 0x48, 0x03, 0x05, 0x00, 0x10, 0x00, 0x00};
  auto relocation = relocate(CodeSpan{kA, bytes}, kNear);
  ASSERT_TRUE(relocation) << relocation.error().describe();

  Relocation inverted = *relocation;  // The jcc keeps its rel8 form at offset 4.
  ASSERT_EQ(inverted.bytes[4], 0x74);
  inverted.bytes[4] = 0x75;
  Relocation stale = *relocation;
  stale.bytes = bytes;  // Displacement not adjusted: reads the (zero) page after the copy.

  for (std::uint64_t rdi : {5, 6}) {
    test::CpuState state = quiet_state();
    state.gpr[7] = rdi;
    auto with_data = [](test::Layout layout) {
      layout.data = kA + 0x1000;
      layout.data_bytes.assign(0x1000, 0x5a);
      return layout;
    };
    const test::Layout layout = with_data(layout_for(bytes, *relocation));
    const auto original = run_original(layout, bytes.size(), state);
    ASSERT_EQ(test::out_of_scope(original, layout.b, copy_end(layout)), "");
    EXPECT_EQ(run_copy_and_compare(layout, bytes.size(), original, state), "") << "rdi=" << rdi;
    EXPECT_NE(run_copy_and_compare(with_data(layout_for(bytes, stale)), bytes.size(), original, state), "")
        << "rdi=" << rdi;
  }
  // The inverted jcc differs on one side of the branch at least (inc rax or not).
  int caught = 0;
  for (std::uint64_t rdi : {5, 6}) {
    test::CpuState state = quiet_state();
    state.gpr[7] = rdi;
    const test::Layout layout = layout_for(bytes, *relocation);
    const auto original = run_original(layout, bytes.size(), state);
    caught += !run_copy_and_compare(layout_for(bytes, inverted), bytes.size(), original, state).empty();
  }
  EXPECT_EQ(caught, 2);
}

}  // namespace
}  // namespace punch::disasm
