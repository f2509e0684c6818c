// disasm decodes with Zydis's minimal mode (faster; it skips flags and most
// attributes) and decodes in full only instructions that may have a
// RIP-relative operand. That is right only while minimal mode fills every
// field punch reads exactly as a full decode does: status and length,
// mnemonic and category (flow, padding, endbr64), the relative immediates
// (branch targets), ModRM and displacement (RIP-relative operands), and what
// the relocator reads (address width, opcode, prefix bytes). Checked at every
// byte offset of real code (libc's text around getpid, this binary's text)
// and over random instructions of every encoding.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <Zydis/Zydis.h>

#include <punch/runtime/maps.hpp>

namespace punch {
namespace {

ZydisDecoder make_decoder(bool minimal) {
  ZydisDecoder d;
  ZydisDecoderInit(&d, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
  if (minimal) ZydisDecoderEnableMode(&d, ZYDIS_DECODER_MODE_MINIMAL, ZYAN_TRUE);
  return d;
}

// "" when both decoders agree on every field punch reads at bytes[offset...], else the first difference.
std::string compare_at(const std::vector<std::uint8_t>& bytes, std::size_t offset) {
  static const ZydisDecoder full = make_decoder(false), minimal = make_decoder(true);
  ZydisDecodedInstruction a, b;
  ZydisDecoderContext ca, cb;
  const ZyanStatus sa = ZydisDecoderDecodeInstruction(&full, &ca, bytes.data() + offset, bytes.size() - offset, &a);
  const ZyanStatus sb = ZydisDecoderDecodeInstruction(&minimal, &cb, bytes.data() + offset, bytes.size() - offset, &b);
  if (sa != sb) return "status";
  if (!ZYAN_SUCCESS(sa)) return "";
  if (a.length != b.length) return "length";
  if (a.mnemonic != b.mnemonic) return "mnemonic";
  if (a.meta.category != b.meta.category) return "category";
  if (a.address_width != b.address_width) return "address width";
  if (a.opcode != b.opcode) return "opcode";
  if (a.operand_count != b.operand_count) return "operand count";
  if ((a.attributes ^ b.attributes) & ZYDIS_ATTRIB_HAS_MODRM) return "HAS_MODRM";
  if (a.raw.prefix_count != b.raw.prefix_count) return "prefix count";
  for (std::uint8_t i = 0; i < a.raw.prefix_count; ++i)
    if (a.raw.prefixes[i].value != b.raw.prefixes[i].value) return "prefix byte";
  if (std::memcmp(&a.raw.modrm, &b.raw.modrm, sizeof a.raw.modrm) != 0) return "ModRM";
  if (std::memcmp(&a.raw.disp, &b.raw.disp, sizeof a.raw.disp) != 0) return "displacement";
  for (int i = 0; i < 2; ++i)
    if (a.raw.imm[i].size != b.raw.imm[i].size || a.raw.imm[i].is_relative != b.raw.imm[i].is_relative ||
        a.raw.imm[i].offset != b.raw.imm[i].offset || a.raw.imm[i].value.u != b.raw.imm[i].value.u)
      return "immediate";
  return "";
}

// Every byte offset of `bytes` (most are not instruction starts: more encodings).
void expect_same_everywhere(const std::vector<std::uint8_t>& bytes, const char* what) {
  std::size_t valid = 0;
  for (std::size_t offset = 0; offset + 1 < bytes.size(); ++offset) {
    const std::string difference = compare_at(bytes, offset);
    ASSERT_EQ(difference, "") << what << " at offset " << offset;
    static const ZydisDecoder full = make_decoder(false);
    ZydisDecodedInstruction insn;
    const std::size_t left = bytes.size() - offset;
    valid += ZYAN_SUCCESS(ZydisDecoderDecodeInstruction(&full, nullptr, bytes.data() + offset, left, &insn));
  }
  EXPECT_GT(valid, bytes.size() / 2) << what << ": control, most offsets decode";
}

// Up to `size` bytes of the executable mapping that holds `address`.
std::vector<std::uint8_t> text_around(const void* address, std::size_t size) {
  auto m = runtime::find_mapping(reinterpret_cast<std::uintptr_t>(address));
  if (!m || !m->executable || !m->readable) return {};
  const std::uintptr_t start = std::max(m->start, reinterpret_cast<std::uintptr_t>(address) - size / 2);
  const std::uintptr_t end = std::min(m->end, start + size);
  std::vector<std::uint8_t> bytes(end - start);
  std::memcpy(bytes.data(), reinterpret_cast<const void*>(start), bytes.size());
  return bytes;
}

TEST(ZydisMinimalMode, FillsWhatPunchReadsLikeAFullDecodeInLibcText) {
  const auto bytes = text_around(reinterpret_cast<const void*>(&::getpid), 512 * 1024);
  ASSERT_GT(bytes.size(), 64u * 1024) << "libc's text is not readable here";
  expect_same_everywhere(bytes, "libc");
}

TEST(ZydisMinimalMode, FillsWhatPunchReadsLikeAFullDecodeInThisBinarysText) {
  const auto bytes = text_around(reinterpret_cast<const void*>(&compare_at), 512 * 1024);
  ASSERT_GT(bytes.size(), 64u * 1024);
  expect_same_everywhere(bytes, "this binary");
}

// Random instructions of every encoding: prefixes, escape bytes, VEX2, VEX3, EVEX, XOP, 3DNow!.
TEST(ZydisMinimalMode, FillsWhatPunchReadsLikeAFullDecodeOverRandomEncodings) {
  std::mt19937_64 rng(20240404);
  static const std::uint8_t kLeads[] = {0x66, 0x67, 0xf2, 0xf3, 0x2e, 0x3e, 0x64, 0xf0, 0x40, 0x48, 0x4f,
                                        0x0f, 0xc5, 0xc4, 0x62, 0x8f, 0xe8, 0xe9, 0xeb, 0x70, 0xe3, 0xff};
  constexpr std::size_t kSlot = 16;
  std::vector<std::uint8_t> bytes(100000 * kSlot);
  for (std::size_t slot = 0; slot < bytes.size(); slot += kSlot) {
    for (std::size_t i = 0; i < kSlot; ++i) bytes[slot + i] = static_cast<std::uint8_t>(rng());
    const std::size_t leads = rng() % 4;
    for (std::size_t i = 0; i < leads; ++i) bytes[slot + i] = kLeads[rng() % sizeof kLeads];
  }
  for (std::size_t slot = 0; slot < bytes.size(); slot += kSlot) {
    const auto first = bytes.begin() + static_cast<std::ptrdiff_t>(slot);
    const std::vector<std::uint8_t> one(first, first + kSlot);
    ASSERT_EQ(compare_at(one, 0), "") << "random slot " << slot / kSlot;
  }
}

}  // namespace
}  // namespace punch
