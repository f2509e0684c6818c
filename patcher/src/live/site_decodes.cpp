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

// The decode of `bytes` at `address`, derived from `old`, the one
// instruction of `old_bytes` (decoded at old.address), when the two differ
// only inside its relative field (branch or RIP displacement) or, for a
// `mov`, its immediate: x86 takes an instruction's length and form from its
// prefixes, opcode, ModRM and SIB, never from those fields' values, so only
// the address and the target the field gives can change (the target is
// worked out again from the new address and field). A JIT's patch points are
// all such changes, and so are a batch's neighbouring points of one shape
// (`mov ecx, imm32` after `mov ecx, imm32`): each derived decode saves a
// Zydis decode. Nothing when the difference lies elsewhere.
std::optional<disasm::Instruction> derived(const disasm::Instruction& old, std::span<const std::uint8_t> old_bytes,
                                           std::uintptr_t address, std::span<const std::uint8_t> bytes) {
  if (old.length != old_bytes.size() || bytes.size() != old_bytes.size()) return std::nullopt;
  for (std::size_t b = 0; b < bytes.size(); ++b) {
    if (bytes[b] == old_bytes[b]) continue;
    if (old.rel_size != 0 && b >= old.rel_offset && b < old.rel_offset + old.rel_size) continue;
    if (!(old.is_mov && old.imm_size != 0 && b >= old.imm_offset && b < old.imm_offset + old.imm_size))
      return std::nullopt;
  }
  disasm::Instruction out = old;
  out.address = address;
  if (old.rel_size != 0) {
    std::int64_t rel = 0;
    if (old.rel_size == 1) {
      rel = static_cast<std::int8_t>(bytes[old.rel_offset]);
    } else if (old.rel_size == 4) {
      std::int32_t r;
      std::memcpy(&r, bytes.data() + old.rel_offset, 4);
      rel = r;
    } else {
      return std::nullopt;
    }
    const std::uintptr_t target = address + old.length + static_cast<std::uintptr_t>(rel);
    if (old.has_branch_target) out.branch_target = target;
    if (old.has_memory_target) out.memory_target = target;
  }
  return out;
}

}  // namespace

void SiteDecodes::cover(std::span<const Site> sites) {
  if (expected_.size() < sites.size()) {
    expected_.reserve(sites.size());
    replacement_.reserve(sites.size());
    instructions_.reserve(instructions_.size() + 2 * (sites.size() - expected_.size()));  // Usually one each.
  }
  for (std::size_t i = expected_.size(); i < sites.size(); ++i) {
    const Site& site = sites[i];
    // The expected bytes: derived from the site before when they have its shape, else decoded.
    auto begin = static_cast<std::uint32_t>(instructions_.size());
    std::optional<disasm::Instruction> same_shape;
    if (i > 0 && expected_.back().count == 1)
      same_shape = derived(instructions_[expected_.back().begin], sites[i - 1].expected, site.address, site.expected);
    std::uint32_t count = 1;
    if (same_shape)
      instructions_.push_back(*same_shape);
    else
      count = append_decoded(site.address, site.expected, instructions_);
    expected_.push_back({begin, count});
    // The replacement: derived from the expected bytes' decode when it can be, else decoded.
    begin = static_cast<std::uint32_t>(instructions_.size());
    std::optional<disasm::Instruction> replacement;
    if (count == 1)
      replacement = derived(instructions_[expected_.back().begin], site.expected, site.address, site.replacement);
    if (replacement) {
      instructions_.push_back(*replacement);
      replacement_.push_back({begin, 1});
    } else {
      replacement_.push_back({begin, append_decoded(site.address, site.replacement, instructions_)});
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
