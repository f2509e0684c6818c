// SiteDecodes derives a replacement's decode from the expected bytes' when
// only a relative field or a mov's immediate differs: the derived
// instruction must equal what Zydis decodes from the replacement itself.
// Likewise a site's expected bytes, derived from the site before when they
// have its shape (same bytes but for that field) at another address.
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
  EXPECT_EQ(a.is_mov, b.is_mov);
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
  EXPECT_EQ(a.is_endbr64, b.is_endbr64);
}

TEST(SiteDecodes, DerivedReplacementsDecodeAsZydisDoes) {
  const std::uintptr_t at = 0x7f0000001000;
  const std::vector<std::pair<std::vector<std::uint8_t>, std::vector<std::uint8_t>>> cases = {
      {{0xE8, 1, 0, 0, 0}, {0xE8, 0xF0, 0xFF, 0xFF, 0xFF}},                          // call rel32
      {{0xE9, 1, 0, 0, 0}, {0xE9, 0, 0, 0, 0x40}},                                   // jmp rel32
      {{0x0F, 0x84, 1, 0, 0, 0}, {0x0F, 0x84, 9, 9, 9, 0}},                          // je rel32
      {{0x74, 0x10}, {0x74, 0x80}},                                                  // je rel8
      {{0x48, 0x8D, 0x05, 1, 0, 0, 0}, {0x48, 0x8D, 0x05, 0, 0, 0, 0x80}},           // lea rax, [rip+d]
      {{0x4C, 0x8B, 0x25, 1, 0, 0, 0}, {0x4C, 0x8B, 0x25, 2, 0, 0, 0}},              // mov r12, [rip+d]
      {{0xB8, 1, 0, 0, 0}, {0xB8, 0xFF, 0xFF, 0xFF, 0xFF}},                          // mov eax, imm32
      {{0x41, 0xBB, 1, 0, 0, 0}, {0x41, 0xBB, 2, 0, 0, 0}},                          // mov r11d, imm32
      {{0x48, 0xB8, 1, 2, 3, 4, 5, 6, 7, 8}, {0x48, 0xB8, 8, 7, 6, 5, 4, 3, 2, 1}},  // mov rax, imm64
      {{0xE9, 1, 0, 0, 0}, {0x0F, 0x1F, 0x44, 0x00, 0x00}},                          // jmp -> nop: decoded, not derived
      {{0xB8, 1, 0, 0, 0}, {0xB9, 1, 0, 0, 0}},                                      // other register: decoded
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

TEST(SiteDecodes, SitesOfTheSameShapeDecodeAsZydisDoes) {
  // Each site's expected bytes follow the previous site's: same shape at
  // another address (derived), or another shape (decoded).
  const std::uintptr_t at = 0x7f0000002000;
  const std::vector<std::pair<std::uintptr_t, std::vector<std::uint8_t>>> cases = {
      {at + 0x00, {0xB9, 1, 0, 0, 0}},                    // mov ecx, imm32
      {at + 0x10, {0xB9, 2, 0, 0, 0}},                    // ... again, another value: derived
      {at + 0x20, {0xBA, 2, 0, 0, 0}},                    // mov edx: another register, decoded
      {at + 0x30, {0xE8, 0x10, 0, 0, 0}},                 // call rel32
      {at + 0x40, {0xE8, 0xF0, 0xFF, 0xFF, 0xFF}},        // call rel32 elsewhere: target from the new address
      {at + 0x50, {0xE8, 0xF0, 0xFF, 0xFF, 0xFF}},        // same bytes, another address
      {at + 0x60, {0x48, 0x8D, 0x05, 1, 0, 0, 0}},        // lea rax, [rip+d]
      {at + 0x70, {0x48, 0x8D, 0x05, 0, 0, 0, 0x80}},     // ... elsewhere, another displacement
      {at + 0x80, {0x74, 0x10}},                          // je rel8
      {at + 0x90, {0x74, 0x80}},                          // ... backwards
      {at + 0xA0, {0x05, 1, 0, 0, 0}},                    // add eax, imm32: not a mov
      {at + 0xB0, {0x05, 2, 0, 0, 0}},                    // another immediate: decoded, not derived
      {at + 0xC0, {0x48, 0xB8, 1, 2, 3, 4, 5, 6, 7, 8}},  // mov rax, imm64
      {at + 0xD0, {0x48, 0xB8, 8, 7, 6, 5, 4, 3, 2, 1}},  // ... derived
  };
  std::vector<Site> sites;
  for (const auto& [address, bytes] : cases) sites.push_back(Site{address, bytes, bytes, std::nullopt});
  SiteDecodes decodes;
  decodes.cover(sites);
  for (std::size_t i = 0; i < sites.size(); ++i) {
    SCOPED_TRACE(i);
    for (bool replacement : {false, true}) {
      const auto known = decodes.of(i, replacement);
      ASSERT_EQ(known.size(), 1u);
      auto direct = disasm::decode(disasm::CodeSpan{sites[i].address, sites[i].expected}, sites[i].address);
      ASSERT_TRUE(direct);
      expect_same(known[0], *direct);
    }
  }
}

}  // namespace
}  // namespace punch::patcher::live
