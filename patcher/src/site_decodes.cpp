// SiteDecodes: the decodes a transaction's validations share.
#include "site_decodes.hpp"

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

}  // namespace

void SiteDecodes::cover(std::span<const Site> sites) {
  for (std::size_t i = expected_.size(); i < sites.size(); ++i) {
    auto begin = static_cast<std::uint32_t>(instructions_.size());
    expected_.push_back({begin, append_decoded(sites[i].address, sites[i].expected, instructions_)});
    begin = static_cast<std::uint32_t>(instructions_.size());
    replacement_.push_back({begin, append_decoded(sites[i].address, sites[i].replacement, instructions_)});
  }
}

std::span<const disasm::Instruction> SiteDecodes::of(std::size_t index, bool replacement) const noexcept {
  const std::vector<Entry>& entries = replacement ? replacement_ : expected_;
  if (index >= entries.size()) return {};
  const Entry e = entries[index];
  return std::span<const disasm::Instruction>(instructions_).subspan(e.begin, e.count);
}

}  // namespace punch::patcher::live
