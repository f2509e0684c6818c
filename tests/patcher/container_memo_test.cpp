// The container memo: the decode it keeps for a container as a change leaves
// it must be exactly what decoding the changed bytes gives, and it hands an
// entry back only for the very same address and bytes, whatever the sites.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include <punch/disasm/instruction.hpp>

#include "container_memo.hpp"
#include "site_decodes.hpp"

namespace punch::patcher::live {
namespace {

constexpr std::uintptr_t kAt = 0x7f0000004000;

// xor eax,eax; mov ecx,1; add eax,ecx; call +0x100; jmp +0x20; nop; nop; int3 x3; ret
// clang-format off
const std::vector<std::uint8_t> kCode = {0x31, 0xC0, 0xB9, 1, 0, 0, 0, 0x01, 0xC8, 0xE8, 0, 1, 0, 0,
                                         0xE9, 0x20, 0, 0, 0, 0x90, 0x90, 0xCC, 0xCC, 0xCC, 0xC3};
// clang-format on

struct Fixture {
  std::vector<Site> sites;
  SiteDecodes decodes;
  std::vector<CheckedSite> checked;
  std::vector<std::uint32_t> members;

  // Sites as (offset, new bytes), by address, in `code` (their old bytes).
  explicit Fixture(const std::vector<std::pair<std::size_t, std::vector<std::uint8_t>>>& changes,
                   const std::vector<std::uint8_t>& code = kCode) {
    for (const auto& [offset, to] : changes)
      sites.push_back(Site{kAt + offset,
                           std::vector<std::uint8_t>(code.begin() + offset, code.begin() + offset + to.size()), to,
                           std::nullopt});
    decodes.cover(sites);
    for (std::size_t i = 0; i < sites.size(); ++i) {
      CheckedSite c;
      c.index = i;
      c.address = sites[i].address;
      c.from = sites[i].expected;
      c.to = sites[i].replacement;
      checked.push_back(c);
      members.push_back(static_cast<std::uint32_t>(i));
    }
  }
  Members view() const { return Members{members, checked}; }
  Known known() const { return Known{&decodes, Direction::kApply}; }
};

void expect_same(const std::vector<disasm::Instruction>& a, const std::vector<disasm::Instruction>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(a[i].address, b[i].address);
    EXPECT_EQ(a[i].length, b[i].length);
    EXPECT_EQ(a[i].flow, b[i].flow);
    EXPECT_EQ(a[i].has_branch_target, b[i].has_branch_target);
    EXPECT_EQ(a[i].branch_target, b[i].branch_target);
    EXPECT_EQ(a[i].has_memory_target, b[i].has_memory_target);
    EXPECT_EQ(a[i].memory_target, b[i].memory_target);
    EXPECT_EQ(a[i].is_padding, b[i].is_padding);
    EXPECT_EQ(a[i].is_mov, b[i].is_mov);
  }
}

TEST(ContainerMemo, TheDecodeAfterAChangeIsTheDecodeOfTheChangedBytes) {
  Fixture f({{2, {0xB9, 9, 0, 0, 0}},                 // mov ecx, 9
             {9, {0xE8, 0, 0, 0x10, 0}},              // call elsewhere
             {14, {0x0F, 0x1F, 0x44, 0x00, 0x00}}});  // jmp -> 5-byte nop
  const disasm::CodeSpan code{kAt, kCode};
  std::vector<disasm::Instruction> decoded;
  ASSERT_TRUE(decode_container(code, f.view(), f.known(), decoded));
  auto after = after_change(code, f.view(), f.known(), decoded);
  ASSERT_TRUE(after);

  std::vector<std::uint8_t> changed = kCode;
  for (const Site& s : f.sites)
    std::memcpy(changed.data() + (s.address - kAt), s.replacement.data(), s.replacement.size());
  EXPECT_EQ(after->bytes, changed);
  EXPECT_EQ(after->start, kAt);
  std::vector<disasm::Instruction> fresh;  // Decoded from the bytes alone, nothing known.
  ASSERT_TRUE(decode_container(disasm::CodeSpan{kAt, changed}, f.view(), Known{}, fresh));
  expect_same(after->instructions, fresh);

  // Handed back for the same address and bytes only, whatever the sites.
  ContainerMemo memo;
  std::vector<ContainerDecode> kept;
  kept.push_back(*after);
  memo.keep(std::move(kept));
  std::vector<disasm::Instruction> out;
  EXPECT_FALSE(memo.take(code, out));  // The old bytes.
  std::vector<std::uint8_t> other = changed;
  other[7] = 0x29;  // add -> sub
  EXPECT_FALSE(memo.take(disasm::CodeSpan{kAt, other}, out));
  EXPECT_FALSE(memo.take(disasm::CodeSpan{kAt + 1, changed}, out));  // Elsewhere.
  ASSERT_TRUE(memo.take(disasm::CodeSpan{kAt, changed}, out));
  expect_same(out, fresh);
  EXPECT_FALSE(memo.take(disasm::CodeSpan{kAt, changed}, out));  // Taken.

  // The list does not depend on the sites: one site, or none.
  Fixture fewer({{9, {0xE8, 0, 0, 0x20, 0}}}, changed);
  std::vector<disasm::Instruction> with_fewer;
  ASSERT_TRUE(decode_container(disasm::CodeSpan{kAt, changed}, fewer.view(), fewer.known(), with_fewer));
  expect_same(with_fewer, fresh);
  Fixture none({});
  std::vector<disasm::Instruction> with_none;
  ASSERT_TRUE(decode_container(disasm::CodeSpan{kAt, changed}, none.view(), Known{}, with_none));
  expect_same(with_none, fresh);
}

TEST(ContainerMemo, NothingWhenTheListCannotBeSwappedOneForOne) {
  const disasm::CodeSpan code{kAt, kCode};
  for (const auto& [offset, to] : std::vector<std::pair<std::size_t, std::vector<std::uint8_t>>>{
           {19, {0x66, 0x90}},                      // nop; nop (left out of the list) -> one 2-byte nop
           {2, {0x31, 0xC0, 0x0F, 0x1F, 0x00}},     // mov -> xor; 3-byte nop: two for one
           {2, {0x90, 0x90, 0x90, 0x90, 0x90}},     // mov -> one-byte nops (a fresh list leaves them out)
           {9, {0xC3, 0xCC, 0xCC, 0xCC, 0xCC}}}) {  // call -> ret; int3s
    SCOPED_TRACE(offset);
    Fixture f({{offset, to}});
    std::vector<disasm::Instruction> decoded;
    ASSERT_TRUE(decode_container(code, f.view(), f.known(), decoded));
    const std::vector<disasm::Instruction> copy = decoded;
    EXPECT_FALSE(after_change(code, f.view(), f.known(), decoded));
    expect_same(decoded, copy);  // Untouched.
  }
}

}  // namespace
}  // namespace punch::patcher::live
