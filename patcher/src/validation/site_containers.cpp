#include "site_containers.hpp"

#include <algorithm>
#include <cstring>
#include <iterator>
#include <string>

#include <punch/runtime/safe_read.hpp>

namespace punch::patcher::live {
std::uint32_t find_container(const CheckedBatch& batch, const ContainerIndex& index, std::uintptr_t address,
                             std::uintptr_t end) {
  auto holds = [&](std::uint32_t c) {
    const Container& box = batch.containers[c];
    return box.source != disasm::FunctionExtent::Source::kBoundedScan && box.start <= address && end <= box.end;
  };
  if (!batch.containers.empty() && holds(static_cast<std::uint32_t>(batch.containers.size() - 1)))
    return static_cast<std::uint32_t>(batch.containers.size() - 1);              // The usual case: the previous site's.
  if (index.max_end <= address && index.by_extent.empty()) return kNoContainer;  // Past them all: the next usual one.
  auto it = std::upper_bound(index.by_start.begin(), index.by_start.end(), address,
                             [](std::uintptr_t a, const auto& entry) { return a < entry.first; });
  if (it != index.by_start.begin() && holds(std::prev(it)->second)) return std::prev(it)->second;
  if (index.max_end > address || !index.by_extent.empty())  // Nested or caller-named extents: look at all.
    for (std::uint32_t c = 0; c < batch.containers.size(); ++c)
      if (holds(c)) return c;
  return kNoContainer;
}

Status read_container(CheckedBatch& batch, Container& box, bool in_heap) {
  const std::size_t size = box.end - box.start;
  box.bytes_begin = batch.bytes.size();
  batch.bytes.resize(box.bytes_begin + size);
  const std::span<std::uint8_t> out(batch.bytes.data() + box.bytes_begin, size);
  if (in_heap) {
    std::memcpy(out.data(), reinterpret_cast<const void*>(box.start), size);
    return {};
  }
  auto n = runtime::safe_read(box.start, out);
  if (!n) return tl::unexpected(std::move(n).error());
  if (*n < size)
    return fail(ErrorCode::kNotMapped, box.start + *n,
                "not readable (reading " + std::to_string(size) + " bytes at " + at(box.start) + ")");
  return {};
}

bool decode_container(disasm::CodeSpan code, const Members& sites, const Known& known,
                      std::vector<disasm::Instruction>& out) {
  out.clear();
  out.reserve(code.bytes.size() / 4);  // Instructions average 3-4 bytes: a realloc or none.
  SiteCursor cursor{sites};
  for (std::uintptr_t a = code.address; a < code.end();) {
    if (branchless_one_byte(code.bytes[a - code.address])) {  // The whole run.
      while (a < code.end() && branchless_one_byte(code.bytes[a - code.address])) ++a;
      continue;
    }
    const CheckedSite* site = cursor.holding(a);
    if (const auto own = site && a == site->address ? known.of(*site, false) : std::span<const disasm::Instruction>();
        !own.empty()) {
      out.insert(out.end(), own.begin(), own.end());
      a = site->end();
      continue;
    }
    auto insn = disasm::decode(code, a);
    if (!insn) return false;
    out.push_back(*insn);
    a = insn->end();
  }
  return true;
}

}  // namespace punch::patcher::live
