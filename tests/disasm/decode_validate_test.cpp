// Decoding facts and patch validation on hand-written bytes, including bad input.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include <Zydis/Zydis.h>

#include <punch/disasm/relocate.hpp>
#include <punch/disasm/validate.hpp>

#include "mnemonic.hpp"

namespace punch::disasm {
namespace {

constexpr std::uintptr_t kBase = 0x401000;

// endbr64; push rbp; cmp dword [rip+0x10], 5; vmovdqu ymm0, [rip+0x20]; vmovdqu64 zmm0, [rip+0x40];
// jne +3; jmp rel32; jrcxz; call rel32; jmp rax; ret
const std::vector<std::uint8_t> kCode = {
    0xf3, 0x0f, 0x1e, 0xfa,                                      // 0x00 endbr64
    0x55,                                                        // 0x04 push rbp
    0x83, 0x3d, 0x10, 0x00, 0x00, 0x00, 0x05,                    // 0x05 cmp dword [rip+0x10], 5
    0xc5, 0xfe, 0x6f, 0x05, 0x20, 0x00, 0x00, 0x00,              // 0x0c vmovdqu ymm0, [rip+0x20]
    0x62, 0xf1, 0xfe, 0x48, 0x6f, 0x05, 0x40, 0x00, 0x00, 0x00,  // 0x14 vmovdqu64 zmm0, [rip+0x40]
    0x75, 0x03,                                                  // 0x1e jne +3
    0xe9, 0x00, 0x01, 0x00, 0x00,                                // 0x20 jmp +0x100
    0xe3, 0xfe,                                                  // 0x25 jrcxz -2
    0xe8, 0x10, 0x00, 0x00, 0x00,                                // 0x27 call +0x10
    0xff, 0xe0,                                                  // 0x2c jmp rax
    0xc3,                                                        // 0x2e ret
};
const CodeSpan kSpan{kBase, kCode};

// decode() asks Zydis for operands only when the ModRM byte can encode a
// RIP-relative operand. Over random instructions of every encoding (legacy
// with prefixes and escape bytes, VEX2, VEX3, EVEX), most with ModRM mod=00
// rm=101, it must find exactly the memory targets and lengths that a full Zydis
// decode of every operand finds.
TEST(Decode, FindsTheSameRipTargetsAsAFullZydisDecode) {
  ZydisDecoder zydis;
  ZydisDecoderInit(&zydis, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
  std::mt19937_64 rng(4242);
  auto byte = [&] { return static_cast<std::uint8_t>(rng()); };
  constexpr std::size_t kSlot = 16;
  static const std::uint8_t kPrefixes[] = {0x66, 0x67, 0xf2, 0xf3, 0x2e, 0x48, 0x41};
  std::vector<std::uint8_t> bytes(40000 * kSlot);
  for (std::size_t slot = 0; slot < bytes.size(); slot += kSlot) {
    std::uint8_t* p = bytes.data() + slot;
    for (std::size_t i = 0; i < kSlot; ++i) p[i] = byte();  // The tail: displacement, immediates, junk.
    std::size_t n = 0;
    if (rng() % 4 == 0) p[n++] = kPrefixes[rng() % 7];
    switch (rng() % 7) {
      case 0: n += 1; break;  // one-byte opcode
      case 1:
        p[n] = 0x0f;
        n += 2;
        break;  // 0F xx
      case 2:
        p[n] = 0x0f;
        p[n + 1] = 0x38 | (rng() & 2);
        n += 3;
        break;  // 0F 38 xx / 0F 3A xx
      case 3:
        p[n] = 0xc5;
        n += 3;
        break;  // VEX2 + opcode
      case 4:   // VEX3 (opcode map 1..3) + opcode
        p[n] = 0xc4;
        p[n + 1] = static_cast<std::uint8_t>((p[n + 1] & 0xe0) | (1 + rng() % 3));
        n += 4;
        break;
      default:  // EVEX (map 1..3, the fixed 1 bit in P1) + opcode
        p[n] = 0x62;
        p[n + 1] = static_cast<std::uint8_t>((p[n + 1] & 0xf0) | (1 + rng() % 3));
        p[n + 2] |= 0x04;
        n += 5;
        break;
    }
    if (rng() % 8 != 0) p[n] = static_cast<std::uint8_t>((p[n] & 0x38) | 5);  // ModRM, mostly [rip+disp32]
  }
  const CodeSpan code{kBase, bytes};
  int decoded = 0, legacy = 0, vex = 0, evex = 0;
  for (std::size_t off = 0; off < bytes.size(); off += kSlot) {
    ZydisDecodedInstruction insn;
    ZydisDecodedOperand operands[ZYDIS_MAX_OPERAND_COUNT];
    const bool valid = ZYAN_SUCCESS(ZydisDecoderDecodeFull(&zydis, bytes.data() + off, kSlot, &insn, operands));
    auto ours = decode(CodeSpan{kBase + off, std::span(bytes).subspan(off, kSlot)}, kBase + off);
    ASSERT_EQ(valid, ours.has_value()) << "at offset " << off;
    if (!valid) continue;
    ++decoded;
    ASSERT_EQ(ours->length, insn.length) << "at offset " << off;
    bool has_target = false;
    ZyanU64 target = 0;
    for (std::uint8_t i = 0; i < insn.operand_count && !has_target; ++i) {
      const auto& op = operands[i];
      has_target = op.type == ZYDIS_OPERAND_TYPE_MEMORY &&
                   (op.mem.base == ZYDIS_REGISTER_RIP || op.mem.base == ZYDIS_REGISTER_EIP) &&
                   ZYAN_SUCCESS(ZydisCalcAbsoluteAddress(&insn, &op, kBase + off, &target));
    }
    ASSERT_EQ(ours->has_memory_target, has_target) << "at offset " << off << ": " << format(code, kBase + off);
    if (!has_target) continue;
    EXPECT_EQ(ours->memory_target, target) << "at offset " << off;
    switch (insn.encoding) {
      case ZYDIS_INSTRUCTION_ENCODING_VEX: ++vex; break;
      case ZYDIS_INSTRUCTION_ENCODING_EVEX: ++evex; break;
      default: ++legacy; break;
    }
  }
  EXPECT_GT(decoded, 10000);
  // The comparison covered many RIP-relative forms of each encoding.
  EXPECT_GT(legacy, 1000);
  EXPECT_GT(vex, 300);
  EXPECT_GT(evex, 200);
}

TEST(Decode, ReportsLengthsFlowsAndTargets) {
  auto all = decode_all(kSpan);
  ASSERT_TRUE(all) << all.error().describe();
  ASSERT_EQ(all->size(), 11u);
  const auto& v = *all;
  EXPECT_TRUE(v[0].is_endbr64);
  EXPECT_EQ(v[1].length, 1);
  // Legacy RIP-relative with an imm8 after the displacement: target from the end of the instruction.
  EXPECT_TRUE(v[2].has_memory_target);
  EXPECT_EQ(v[2].memory_target, kBase + 0x0c + 0x10);
  EXPECT_EQ(v[2].rel_offset, 2);
  EXPECT_EQ(v[2].rel_size, 4);
  EXPECT_EQ(v[3].memory_target, kBase + 0x14 + 0x20);  // VEX
  EXPECT_EQ(v[4].memory_target, kBase + 0x1e + 0x40);  // EVEX (disp32, no disp8*N for RIP)
  EXPECT_EQ(v[5].flow, Flow::kCondJump);
  EXPECT_EQ(v[5].branch_target, kBase + 0x23);
  EXPECT_EQ(v[5].rel_size, 1);
  EXPECT_EQ(v[6].flow, Flow::kJump);
  EXPECT_EQ(v[6].branch_target, kBase + 0x25 + 0x100);
  EXPECT_EQ(v[6].rel_size, 4);
  EXPECT_EQ(v[7].flow, Flow::kShortOnly);
  EXPECT_EQ(v[7].branch_target, kBase + 0x25);
  EXPECT_EQ(v[8].flow, Flow::kCall);
  EXPECT_EQ(v[8].branch_target, kBase + 0x2c + 0x10);
  EXPECT_EQ(v[9].flow, Flow::kIndirectJump);
  EXPECT_FALSE(v[9].has_branch_target);
  EXPECT_EQ(v[10].flow, Flow::kReturn);
  EXPECT_EQ(format(kSpan, kBase + 4), "push rbp");
}

TEST(Decode, BadInputIsAClearError) {
  auto empty = decode_all(CodeSpan{kBase, {}});
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code, ErrorCode::kInvalidArgument);

  const std::vector<std::uint8_t> truncated = {0x48, 0x8b, 0x05, 0x00};  // mov rax, [rip+...] cut short
  auto t = decode(CodeSpan{kBase, truncated}, kBase);
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code, ErrorCode::kDecodeFailed);
  EXPECT_NE(t.error().message.find("truncated"), std::string::npos) << t.error().message;
  EXPECT_NE(t.error().message.find(at(kBase)), std::string::npos);

  const std::vector<std::uint8_t> invalid = {0x90, 0x06};  // 0x06 (push es) does not exist in 64-bit mode
  auto i = decode_all(CodeSpan{kBase, invalid});
  ASSERT_FALSE(i);
  EXPECT_EQ(i.error().code, ErrorCode::kDecodeFailed);
  EXPECT_NE(i.error().message.find(at(kBase + 1)), std::string::npos) << i.error().message;

  auto outside = decode(kSpan, kBase + kCode.size());
  ASSERT_FALSE(outside);
  EXPECT_EQ(outside.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(format(CodeSpan{kBase, invalid}, kBase + 1).find("undecodable"), std::string::npos);
}

TEST(CheckBoundaries, AcceptsWholeInstructionsAndNamesTheStraddler) {
  auto ok = check_boundaries(kSpan, kBase + 4, kBase + 0x0c);
  ASSERT_TRUE(ok) << ok.error().describe();
  EXPECT_EQ(ok->size(), 2u);

  auto ends_inside = check_boundaries(kSpan, kBase, kBase + 5 + 3);
  ASSERT_FALSE(ends_inside);
  EXPECT_EQ(ends_inside.error().code, ErrorCode::kNotBoundary);
  EXPECT_EQ(ends_inside.error().message.rfind(at(kBase + 8), 0), 0u) << ends_inside.error().message;
  EXPECT_NE(ends_inside.error().message.find("cmp dword ptr"), std::string::npos) << ends_inside.error().message;
  EXPECT_NE(ends_inside.error().message.find(at(kBase + 5)), std::string::npos);
  EXPECT_EQ(ends_inside.error().address, kBase + 8) << "the address as a value, to branch on";

  auto starts_inside = check_boundaries(kSpan, kBase + 2, kBase + 5);
  ASSERT_FALSE(starts_inside);
  EXPECT_EQ(starts_inside.error().code, ErrorCode::kNotBoundary);
  EXPECT_NE(starts_inside.error().message.find("endbr64"), std::string::npos);
  EXPECT_EQ(starts_inside.error().address, kBase + 2);

  EXPECT_EQ(check_boundaries(kSpan, kBase + 4, kBase + 4).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(check_boundaries(kSpan, kBase - 1, kBase + 4).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(check_boundaries(kSpan, kBase, kBase + kCode.size() + 1).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(check_boundaries(CodeSpan{kBase, {}}, kBase, kBase + 1).error().code, ErrorCode::kInvalidArgument);
}

// The one rule for calls in a run, shared by validation, hooks and relocation:
// a call may only be the run's last instruction (a call to the next
// instruction, the get-pc idiom, returns nowhere and may stand anywhere).
TEST(CheckCallIsLast, OnlyTheLastInstructionMayCall) {
  auto call = decode(kSpan, kBase + 0x27);  // call +0x10, 5 bytes
  ASSERT_TRUE(call) << call.error().describe();
  EXPECT_TRUE(check_call_is_last(kSpan, *call, kBase + 0x2c));
  auto early = check_call_is_last(kSpan, *call, kBase + 0x2e);
  ASSERT_FALSE(early);
  EXPECT_EQ(early.error().code, ErrorCode::kCannotRelocate);
  EXPECT_EQ(early.error().address, kBase + 0x27);
  EXPECT_NE(early.error().message.find("call"), std::string::npos) << early.error().message;
  // relocate() refuses the same run with the same code.
  auto moved = relocate(CodeSpan{kBase + 0x27, std::span(kCode).subspan(0x27, 7)}, kBase + 0x10000);
  ASSERT_FALSE(moved);
  EXPECT_EQ(moved.error().code, ErrorCode::kCannotRelocate);

  const std::vector<std::uint8_t> get_pc = {0xe8, 0, 0, 0, 0, 0x58, 0xc3};  // call next; pop rax; ret
  auto next = decode(CodeSpan{kBase, get_pc}, kBase);
  ASSERT_TRUE(next) << next.error().describe();
  EXPECT_TRUE(check_call_is_last(CodeSpan{kBase, get_pc}, *next, kBase + get_pc.size()));
}

// An error keeps its code and address when a caller adds what it was doing.
TEST(ErrorContext, WithContextKeepsCodeAndAddress) {
  Status failed = fail(ErrorCode::kNotMapped, 0x1000, "not mapped");
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().message, "0x1000: not mapped");
  EXPECT_EQ(failed.error().address, 0x1000u);
  const Error wrapped = failed.error().with_context("writing the copy");
  EXPECT_EQ(wrapped.code, ErrorCode::kNotMapped);
  EXPECT_EQ(wrapped.address, 0x1000u);
  EXPECT_EQ(wrapped.describe(), "not-mapped: writing the copy: 0x1000: not mapped");
  EXPECT_EQ(fail(ErrorCode::kUnsupported, "no address").value().address, 0u);
}

// PUNCH_TRY_ASSIGN passes an error up unchanged, else names the value.
Result<int> doubled(Result<int> in) {
  PUNCH_TRY_ASSIGN(const int value, std::move(in));
  return value * 2;
}

TEST(ErrorContext, TryAssignPassesErrorsUpAndAssignsValues) {
  EXPECT_EQ(doubled(21).value(), 42);
  auto refused = doubled(fail(ErrorCode::kTimeout, 0x2000, "slow"));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kTimeout);
  EXPECT_EQ(refused.error().address, 0x2000u);
}

TEST(CheckReplacement, WholeInstructionsEndingAtTheEnd) {
  const std::vector<std::uint8_t> jmp_and_nops = {0xe9, 1, 2, 3, 4, 0x0f, 0x1f, 0x00, 0x90};
  auto ok = check_replacement(CodeSpan{kBase, jmp_and_nops});
  ASSERT_TRUE(ok) << ok.error().describe();
  EXPECT_EQ(ok->size(), 3u);
  EXPECT_TRUE(ok->back().is_padding);

  const std::vector<std::uint8_t> cut = {0xe9, 1, 2, 3, 4, 0x0f, 0x1f};  // a nopl cut short
  auto bad = check_replacement(CodeSpan{kBase, cut});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::kDecodeFailed);
  EXPECT_NE(bad.error().message.find(at(kBase + 5)), std::string::npos) << bad.error().message;
  EXPECT_EQ(check_replacement(CodeSpan{kBase, {}}).error().code, ErrorCode::kInvalidArgument);
}

TEST(EncodeJmp, Rel32AndAbsoluteDecodeToTheirTargets) {
  auto near = encode_jmp_rel32(kBase, kBase - 0x1000);
  ASSERT_TRUE(near);
  auto insn = decode(CodeSpan{kBase, *near}, kBase);
  ASSERT_TRUE(insn);
  EXPECT_EQ(insn->length, 5);
  EXPECT_EQ(insn->branch_target, kBase - 0x1000);
  EXPECT_EQ(encode_jmp_rel32(kBase, kBase + (1ull << 32)).error().code, ErrorCode::kOutOfRange);
  const auto fixed = jmp_rel32_bytes(kBase, kBase - 0x1000);  // The same bytes, without allocating.
  ASSERT_TRUE(fixed);
  EXPECT_EQ(std::vector<std::uint8_t>(fixed->begin(), fixed->end()), *near);
  EXPECT_FALSE(jmp_rel32_bytes(kBase, kBase + (1ull << 32)));

  const auto far = encode_jmp_absolute(0x7f0012345678);
  ASSERT_EQ(far.size(), 14u);
  auto abs = decode(CodeSpan{kBase, far}, kBase);
  ASSERT_TRUE(abs);
  EXPECT_EQ(abs->flow, Flow::kIndirectJump);
  EXPECT_EQ(abs->memory_target, kBase + 6);
  std::uint64_t stored = 0;
  for (int i = 7; i >= 0; --i) stored = (stored << 8) | far[6 + i];
  EXPECT_EQ(stored, 0x7f0012345678u);
}

TEST(Relocate, BadInputIsAClearError) {
  EXPECT_EQ(relocate(CodeSpan{kBase, {}}, 0x500000).error().code, ErrorCode::kInvalidArgument);
  const std::vector<std::uint8_t> cut = {0x55, 0x48, 0x8b};
  auto r = relocate(CodeSpan{kBase, cut}, 0x500000);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kDecodeFailed);
  EXPECT_NE(r.error().message.find(at(kBase + 1)), std::string::npos);
  const std::vector<std::uint8_t> call_then_more = {0xe8, 0, 1, 0, 0, 0x90};
  EXPECT_EQ(relocate(CodeSpan{kBase, call_then_more}, 0x500000).error().code, ErrorCode::kCannotRelocate);
  const std::vector<std::uint8_t> final_call = {0x90, 0xe8, 0, 1, 0, 0};
  EXPECT_TRUE(relocate(CodeSpan{kBase, final_call}, 0x500000));
  EXPECT_EQ(relocate(CodeSpan{kBase, final_call}, 0x500000, {.allow_final_call = false}).error().code,
            ErrorCode::kCannotRelocate);
  const std::vector<std::uint8_t> operand_size_jmp = {0x66, 0xe9, 0, 1, 0, 0};
  EXPECT_EQ(relocate(CodeSpan{kBase, operand_size_jmp}, 0x500000).error().code, ErrorCode::kCannotRelocate);
}

// A run that reads its own bytes (the absolute hook entry `jmp [rip+2];
// movabs rax, imm64`) reads the copy's: the copy works without the original.
TEST(Relocate, ReadsOfTheRunsOwnBytesReadTheCopy) {
  std::vector<std::uint8_t> entry = {0xff, 0x25, 2, 0, 0, 0, 0x48, 0xb8};
  for (int i = 0; i < 8; ++i) entry.push_back(static_cast<std::uint8_t>(0x11 * (i + 1)));
  const std::uintptr_t far = kBase + (std::uintptr_t{1} << 40);  // Far beyond rel32 reach of the original.
  auto r = relocate(CodeSpan{kBase, entry}, far);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->bytes, entry);  // The same bytes behave the same there.
  auto jmp = decode(CodeSpan{far, r->bytes}, far);
  ASSERT_TRUE(jmp);
  EXPECT_EQ(jmp->memory_target, far + 8);

  // A read that would cross into an instruction the copy re-encodes is refused.
  const std::vector<std::uint8_t> into_branch = {0x8b, 0x05, 0, 0, 0, 0, 0xeb, 0x00};  // mov eax, [rip+0]; jmp +0
  auto refused = relocate(CodeSpan{kBase, into_branch}, far);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kCannotRelocate);
  EXPECT_NE(refused.error().message.find("does not keep"), std::string::npos) << refused.error().message;
}

// final_call_as_jump: the callee sees the original return address (the
// call's end in the source) and returns there; nothing points into the copy.
TEST(Relocate, FinalCallAsJumpPushesTheOriginalReturnAddress) {
  const std::uintptr_t dest = 0x500000;
  const std::vector<std::uint8_t> direct = {0x90, 0xe8, 0, 1, 0, 0};  // nop; call kBase + 6 + 0x100
  auto r = relocate(CodeSpan{kBase, direct}, dest, {.final_call_as_jump = true});
  ASSERT_TRUE(r) << r.error().describe();
  auto all = decode_all(CodeSpan{dest, r->bytes});
  ASSERT_TRUE(all) << all.error().describe();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ(punch::test::mnemonic_at(CodeSpan{dest, r->bytes}, (*all)[1].address), "push");
  EXPECT_EQ(r->bytes[r->offsets[1].new_offset + 1], static_cast<std::uint8_t>(kBase + 6));  // push imm32 = kBase + 6.
  EXPECT_EQ((*all)[2].flow, Flow::kJump);
  EXPECT_EQ((*all)[2].branch_target, kBase + 6 + 0x100);

  // call [rip+0x10] -> push; jmp [rip+x] naming the same slot.
  const std::vector<std::uint8_t> through_slot = {0xff, 0x15, 0x10, 0, 0, 0};
  r = relocate(CodeSpan{kBase, through_slot}, dest, {.final_call_as_jump = true});
  ASSERT_TRUE(r) << r.error().describe();
  all = decode_all(CodeSpan{dest, r->bytes});
  ASSERT_TRUE(all) << all.error().describe();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[1].flow, Flow::kIndirectJump);
  EXPECT_EQ((*all)[1].memory_target, kBase + 6 + 0x10);

  // call rax -> push; jmp rax.
  const std::vector<std::uint8_t> through_rax = {0xff, 0xd0};
  r = relocate(CodeSpan{kBase, through_rax}, dest, {.final_call_as_jump = true});
  ASSERT_TRUE(r) << r.error().describe();
  all = decode_all(CodeSpan{dest, r->bytes});
  ASSERT_TRUE(all);
  EXPECT_EQ(punch::test::mnemonic_at(CodeSpan{dest, r->bytes}, all->back().address), "jmp");
  EXPECT_EQ(all->back().flow, Flow::kIndirectJump);

  // call [rsp+8]: the push would move what the operand names.
  const std::vector<std::uint8_t> through_stack = {0xff, 0x54, 0x24, 0x08};
  auto refused = relocate(CodeSpan{kBase, through_stack}, dest, {.final_call_as_jump = true});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kCannotRelocate);
  for (const auto* run : {&direct, &through_slot, &through_rax})
    EXPECT_LE(relocate(CodeSpan{kBase, *run}, dest, {.final_call_as_jump = true})->bytes.size(),
              *relocated_size_bound(CodeSpan{kBase, *run}));
}

}  // namespace
}  // namespace punch::disasm

namespace punch::disasm {
namespace {

// Every nop form compilers and assemblers pad with is padding (the hook
// planner relies on it to find patchable entry pads); int3 is too; a real
// instruction is not.
TEST(Decode, EveryNopFormAndInt3ArePadding) {
  const std::vector<std::vector<std::uint8_t>> padding = {
      {0x90},                                                  // nop
      {0x66, 0x90},                                            // xchg ax, ax
      {0x0f, 0x1f, 0x00},                                      // nop dword [rax]
      {0x0f, 0x1f, 0x44, 0x00, 0x00},                          // nop dword [rax+rax+0] (the 5-byte pad)
      {0x66, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00},  // nop word [rax+rax+0]
      {0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00},
      {0xcc},  // int3
  };
  for (const auto& bytes : padding) {
    auto insn = decode(CodeSpan{0x1000, bytes}, 0x1000);
    ASSERT_TRUE(insn) << insn.error().describe();
    EXPECT_EQ(insn->length, bytes.size());
    EXPECT_TRUE(insn->is_padding) << format(CodeSpan{0x1000, bytes}, 0x1000);
  }
  const std::vector<std::uint8_t> mov = {0x89, 0xf8};  // mov eax, edi
  auto insn = decode(CodeSpan{0x1000, mov}, 0x1000);
  ASSERT_TRUE(insn) << insn.error().describe();
  EXPECT_FALSE(insn->is_padding);
}

}  // namespace
}  // namespace punch::disasm
