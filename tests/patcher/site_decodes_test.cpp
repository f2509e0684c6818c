// SiteDecodes derives a replacement's decode from the expected bytes' when
// only a relative field or a mov's immediate differs: the derived
// instruction must equal what Zydis decodes from the replacement itself.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include <punch/disasm/instruction.hpp>

#include "site_decodes.hpp"

namespace punch::patcher::live {
namespace {

void expect_same(const disasm::Instruction& a, const disasm::Instruction& b) {
  EXPECT_EQ(a.address, b.address);
  EXPECT_EQ(a.length, b.length);
  EXPECT_EQ(a.mnemonic, b.mnemonic);
  EXPECT_EQ(a.flow, b.flow);
  EXPECT_EQ(a.has_branch_target, b.has_branch_target);
  EXPECT_EQ(a.branch_target, b.branch_target);
  EXPECT_EQ(a.has_memory_target, b.has_memory_target);
  EXPECT_EQ(a.memory_target, b.memory_target);
  EXPECT_EQ(a.rel_offset, b.rel_offset);
  EXPECT_EQ(a.rel_size, b.rel_size);
  EXPECT_EQ(a.imm_offset, b.imm_offset);
  EXPECT_EQ(a.imm_size, b.imm_size);
  EXPECT_EQ(a.is_padding, b.is_padding);
}

TEST(SiteDecodes, DerivedReplacementsDecodeAsZydisDoes) {
  const std::uintptr_t at = 0x7f0000001000;
  const std::vector<std::pair<std::vector<std::uint8_t>, std::vector<std::uint8_t>>> cases = {
      {{0xE8, 1, 0, 0, 0}, {0xE8, 0xF0, 0xFF, 0xFF, 0xFF}},                     // call rel32
      {{0xE9, 1, 0, 0, 0}, {0xE9, 0, 0, 0, 0x40}},                              // jmp rel32
      {{0x0F, 0x84, 1, 0, 0, 0}, {0x0F, 0x84, 9, 9, 9, 0}},                     // je rel32
      {{0x74, 0x10}, {0x74, 0x80}},                                             // je rel8
      {{0x48, 0x8D, 0x05, 1, 0, 0, 0}, {0x48, 0x8D, 0x05, 0, 0, 0, 0x80}},      // lea rax, [rip+d]
      {{0x4C, 0x8B, 0x25, 1, 0, 0, 0}, {0x4C, 0x8B, 0x25, 2, 0, 0, 0}},         // mov r12, [rip+d]
      {{0xB8, 1, 0, 0, 0}, {0xB8, 0xFF, 0xFF, 0xFF, 0xFF}},                     // mov eax, imm32
      {{0x41, 0xBB, 1, 0, 0, 0}, {0x41, 0xBB, 2, 0, 0, 0}},                     // mov r11d, imm32
      {{0x48, 0xB8, 1, 2, 3, 4, 5, 6, 7, 8}, {0x48, 0xB8, 8, 7, 6, 5, 4, 3, 2, 1}},  // mov rax, imm64
      {{0xE9, 1, 0, 0, 0}, {0x0F, 0x1F, 0x44, 0x00, 0x00}},                     // jmp -> nop: decoded, not derived
      {{0xB8, 1, 0, 0, 0}, {0xB9, 1, 0, 0, 0}},                                 // other register: decoded
  };
  std::vector<Site> sites;
  for (const auto& [from, to] : cases) sites.push_back(Site{at, from, to, std::nullopt});
  SiteDecodes decodes;
  decodes.cover(sites);
  for (std::size_t i = 0; i < sites.size(); ++i) {
    SCOPED_TRACE(i);
    const auto replacement = decodes.of(i, true);
    ASSERT_EQ(replacement.size(), 1u);
    auto direct = disasm::decode(disasm::CodeSpan{at, sites[i].replacement}, at);
    ASSERT_TRUE(direct);
    expect_same(replacement[0], *direct);
  }
}

}  // namespace
}  // namespace punch::patcher::live
