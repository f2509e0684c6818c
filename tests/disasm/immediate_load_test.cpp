// immediate_load reads `mov reg, imm` from its bytes without Zydis (the trap
// handler carries such a load out instead of sending a thread to a copy, so a
// wrong register or value would silently corrupt the thread). Over every
// prefix, opcode and ModRM it might meet, it must say exactly what a full
// Zydis decode says: the same register and the same 64-bit value, or no.
#include <gtest/gtest.h>

#include <Zydis/Zydis.h>

#include <cstdint>
#include <random>
#include <vector>

#include <punch/disasm/instruction.hpp>

namespace punch::disasm {
namespace {

bool is_legacy_prefix(std::uint8_t b) {
  switch (b) {
    case 0x66:
    case 0x67:
    case 0xF0:
    case 0xF2:
    case 0xF3:
    case 0x2E:
    case 0x36:
    case 0x3E:
    case 0x26:
    case 0x64:
    case 0x65: return true;
    default: return false;
  }
}

// What Zydis says `bytes` are, in immediate_load's terms.
std::optional<ImmediateLoad> zydis_says(const ZydisDecoder& zydis, const std::vector<std::uint8_t>& bytes) {
  ZydisDecodedInstruction insn;
  ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT];
  if (!ZYAN_SUCCESS(ZydisDecoderDecodeFull(&zydis, bytes.data(), bytes.size(), &insn, ops))) return std::nullopt;
  if (insn.length != bytes.size() || insn.mnemonic != ZYDIS_MNEMONIC_MOV || is_legacy_prefix(bytes[0]))
    return std::nullopt;
  if (insn.operand_count_visible != 2 || ops[0].type != ZYDIS_OPERAND_TYPE_REGISTER ||
      ops[1].type != ZYDIS_OPERAND_TYPE_IMMEDIATE)
    return std::nullopt;
  const ZydisRegisterWidth width = ZydisRegisterGetWidth(ZYDIS_MACHINE_MODE_LONG_64, ops[0].reg.value);
  const ZyanI8 id = ZydisRegisterGetId(ops[0].reg.value);
  if ((width != 32 && width != 64) || id == 4) return std::nullopt;
  ImmediateLoad load;
  load.reg = static_cast<std::uint8_t>(id);
  load.value = width == 32
                   ? static_cast<std::uint32_t>(ops[1].imm.value.u)
                   : (ops[1].imm.is_signed ? static_cast<std::uint64_t>(ops[1].imm.value.s) : ops[1].imm.value.u);
  return load;
}

TEST(ImmediateLoad, AgreesWithAFullZydisDecodeOnEveryNearbyEncoding) {
  ZydisDecoder zydis;
  ZydisDecoderInit(&zydis, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
  std::mt19937_64 rng(77);
  std::vector<int> prefixes = {-1, 0x66, 0xF3, 0x2E, 0x67};
  for (int rex = 0x40; rex <= 0x4F; ++rex) prefixes.push_back(rex);
  int loads = 0, cases = 0;
  for (int prefix : prefixes)
    for (int opcode : {0xB0, 0xB3, 0xB8, 0xB9, 0xBC, 0xBF, 0xC6, 0xC7, 0x89, 0x8B})
      for (int modrm = 0; modrm < 256; modrm += (opcode == 0xC7 ? 1 : 64))
        for (std::size_t immediate : {1, 2, 4, 8})
          for (int trim : {-1, 0, 1}) {  // One byte short, exact, one byte too many.
            std::vector<std::uint8_t> bytes;
            if (prefix >= 0) bytes.push_back(static_cast<std::uint8_t>(prefix));
            bytes.push_back(static_cast<std::uint8_t>(opcode));
            if (opcode == 0xC6 || opcode == 0xC7 || opcode == 0x89 || opcode == 0x8B)
              bytes.push_back(static_cast<std::uint8_t>(modrm));
            for (std::size_t k = 0; k < immediate; ++k) bytes.push_back(static_cast<std::uint8_t>(rng()));
            if (trim < 0) bytes.pop_back();
            if (trim > 0) bytes.push_back(0x90);
            const auto expected = zydis_says(zydis, bytes);
            const auto ours = immediate_load(bytes);
            ++cases;
            ASSERT_EQ(ours.has_value(), expected.has_value())
                << "case " << cases << ": " << format(CodeSpan{0x1000, bytes}, 0x1000);
            if (!ours) continue;
            ++loads;
            EXPECT_EQ(ours->reg, expected->reg) << format(CodeSpan{0x1000, bytes}, 0x1000);
            EXPECT_EQ(ours->value, expected->value) << format(CodeSpan{0x1000, bytes}, 0x1000);
          }
  // Loads into every register but rsp (C7 with every ModRM), in both widths and both forms, were among them.
  EXPECT_GT(loads, 300) << "of " << cases;
}

TEST(ImmediateLoad, KnownEncodings) {
  // mov eax, 0xffffffff zero-extends; mov rax, -1 (REX.W C7) sign-extends; mov r9, imm64.
  EXPECT_EQ(immediate_load(std::vector<std::uint8_t>{0xB8, 0xFF, 0xFF, 0xFF, 0xFF})->value, 0xFFFFFFFFull);
  const auto minus_one = immediate_load(std::vector<std::uint8_t>{0x48, 0xC7, 0xC0, 0xFF, 0xFF, 0xFF, 0xFF});
  ASSERT_TRUE(minus_one);
  EXPECT_EQ(minus_one->reg, 0);
  EXPECT_EQ(minus_one->value, ~0ull);
  const auto r9 = immediate_load(std::vector<std::uint8_t>{0x49, 0xB9, 1, 2, 3, 4, 5, 6, 7, 8});
  ASSERT_TRUE(r9);
  EXPECT_EQ(r9->reg, 9);
  EXPECT_EQ(r9->value, 0x0807060504030201ull);
  EXPECT_FALSE(immediate_load(std::vector<std::uint8_t>{0xBC, 0, 0, 0, 0}));        // mov esp: never emulated.
  EXPECT_FALSE(immediate_load(std::vector<std::uint8_t>{0xC7, 0x00, 0, 0, 0, 0}));  // mov dword [rax], imm: memory.
  EXPECT_FALSE(immediate_load(std::vector<std::uint8_t>{}));
}

}  // namespace
}  // namespace punch::disasm
