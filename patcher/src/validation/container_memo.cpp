// ContainerMemo: decodes of containers kept between commits.
#include "container_memo.hpp"

#include <algorithm>
#include <cstring>
#include <span>

namespace punch::patcher::live {

bool ContainerMemo::take(disasm::CodeSpan code, std::vector<disasm::Instruction>& out) {
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (it->start != code.address || it->bytes.size() != code.bytes.size() ||
        std::memcmp(it->bytes.data(), code.bytes.data(), code.bytes.size()) != 0)
      continue;
    out = std::move(it->instructions);
    entries_.erase(it);
    return true;
  }
  return false;
}

void ContainerMemo::keep(std::vector<ContainerDecode>&& decodes) {
  const std::size_t skip = decodes.size() > kMaxEntries ? decodes.size() - kMaxEntries : 0;  // Forgotten at once.
  for (ContainerDecode& d : std::span(decodes).subspan(skip)) {
    if (d.bytes.size() > kMaxBytes) continue;
    std::erase_if(entries_, [&](const ContainerDecode& e) { return e.start == d.start; });
    entries_.push_back(std::move(d));
  }
  std::size_t bytes = 0;
  for (const ContainerDecode& e : entries_) bytes += e.bytes.size();
  while (entries_.size() > kMaxEntries || bytes > kMaxBytes) {
    bytes -= entries_.front().bytes.size();
    entries_.erase(entries_.begin());
  }
}

ContainerMemo& container_memo() {
  static auto* memo = new ContainerMemo;  // Never destroyed: commits may run during static destruction.
  return *memo;
}

std::optional<ContainerDecode> after_change(disasm::CodeSpan code, const Members& sites, const Known& known,
                                            std::vector<disasm::Instruction>& decoded) {
  // Where each site's old instructions start in `decoded`: at its address,
  // as many as its new ones, the last ending at its end (addresses and ends
  // only grow along the list, so those are all the list holds of the site).
  // The new ones must all be in a fresh decode's list too: none of them a
  // one-byte int3, ret or nop, which decode_container leaves out.
  std::vector<std::size_t> first(sites.size());
  std::size_t next = 0;
  for (std::size_t k = 0; k < sites.size(); ++k) {
    const CheckedSite& c = sites[k];
    const auto now = known.of(c, true);
    while (next < decoded.size() && decoded[next].address < c.address) ++next;
    if (now.empty() || now.back().end() != c.end() || next + now.size() > decoded.size() ||
        decoded[next].address != c.address || decoded[next + now.size() - 1].end() != c.end())
      return std::nullopt;
    for (const disasm::Instruction& insn : now)
      if (insn.length == 1 && branchless_one_byte(c.to[insn.address - c.address])) return std::nullopt;
    first[k] = next;
    next += now.size();
  }
  ContainerDecode out;
  out.start = code.address;
  out.bytes.assign(code.bytes.begin(), code.bytes.end());
  for (std::size_t k = 0; k < sites.size(); ++k) {
    const CheckedSite& c = sites[k];
    const auto now = known.of(c, true);
    std::copy(now.begin(), now.end(), decoded.begin() + static_cast<std::ptrdiff_t>(first[k]));
    std::memcpy(out.bytes.data() + (c.address - code.address), c.to.data(), c.to.size());
  }
  out.instructions = std::move(decoded);
  return out;
}

}  // namespace punch::patcher::live
