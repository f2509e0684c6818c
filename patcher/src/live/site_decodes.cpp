// SiteDecodes: the decodes a transaction's validations share.
#include "site_decodes.hpp"

#include <cstring>
#include <optional>

namespace punch::patcher::live {
namespace {

// Appends the instructions of `bytes` at `address` to `out` and returns how
// many; appends nothing and returns 0 when they are not whole instructions.
std::uint32_t append_decoded(std::uintptr_t address, std::span<const std::uint8_t> bytes,
                             std::vector<disasm::Instruction>& out) {
  const std::size_t before = out.size();
  const disasm::CodeSpan code{address, bytes};
  for (std::uintptr_t a = address; a < code.end();) {
    auto insn = disasm::decode(code, a);
    if (!insn) {
      out.resize(before);
      return 0;
    }
    out.push_back(*insn);
    a = insn->end();
  }
  return static_cast<std::uint32_t>(out.size() - before);
}

// The decode of `site`'s replacement derived from its expected bytes' one
// instruction `old`, when the two differ only inside its relative field
// (branch or RIP displacement) or, for a `mov`, its immediate: x86 takes an
// instruction's length and form from its prefixes, opcode, ModRM and SIB,
// never from those fields' values, so only the target the field gives can
// change. A JIT's patch points are all such changes, and a batch of them
// saves a decode per site. Nothing when the difference lies elsewhere.
std::optional<disasm::Instruction> derived_replacement(const Site& site, const disasm::Instruction& old) {
  if (old.length != site.expected.size() || site.replacement.size() != site.expected.size()) return std::nullopt;
  const bool mov = old.is_mov;
  bool in_rel = false;
  for (std::size_t b = 0; b < site.expected.size(); ++b) {
    if (site.expected[b] == site.replacement[b]) continue;
    if (old.rel_size != 0 && b >= old.rel_offset && b < old.rel_offset + old.rel_size) {
      in_rel = true;
      continue;
    }
    if (!(mov && old.imm_size != 0 && b >= old.imm_offset && b < old.imm_offset + old.imm_size)) return std::nullopt;
  }
  disasm::Instruction out = old;
  if (in_rel) {
    std::int64_t rel = 0;
    if (old.rel_size == 1) {
      rel = static_cast<std::int8_t>(site.replacement[old.rel_offset]);
    } else if (old.rel_size == 4) {
      std::int32_t r;
      std::memcpy(&r, site.replacement.data() + old.rel_offset, 4);
      rel = r;
    } else {
      return std::nullopt;
    }
    const std::uintptr_t target = site.address + old.length + static_cast<std::uintptr_t>(rel);
    if (old.has_branch_target) out.branch_target = target;
    if (old.has_memory_target) out.memory_target = target;
  }
  return out;
}

}  // namespace

void SiteDecodes::cover(std::span<const Site> sites) {
  for (std::size_t i = expected_.size(); i < sites.size(); ++i) {
    auto begin = static_cast<std::uint32_t>(instructions_.size());
    const std::uint32_t count = append_decoded(sites[i].address, sites[i].expected, instructions_);
    expected_.push_back({begin, count});
    begin = static_cast<std::uint32_t>(instructions_.size());
    std::optional<disasm::Instruction> derived;
    if (count == 1) derived = derived_replacement(sites[i], instructions_.back());
    if (derived) {
      instructions_.push_back(*derived);
      replacement_.push_back({begin, 1});
    } else {
      replacement_.push_back({begin, append_decoded(sites[i].address, sites[i].replacement, instructions_)});
    }
  }
}

std::span<const disasm::Instruction> SiteDecodes::of(std::size_t index, bool replacement) const noexcept {
  const std::vector<Entry>& entries = replacement ? replacement_ : expected_;
  if (index >= entries.size()) return {};
  const Entry e = entries[index];
  return std::span<const disasm::Instruction>(instructions_).subspan(e.begin, e.count);
}

}  // namespace punch::patcher::live
