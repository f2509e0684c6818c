// The code that holds sites (their container: a function, a heap allocation
// or a caller-named extent), read once and decoded once per validation, and
// the ways to find a container's sites again.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <map>
#include <span>
#include <utility>
#include <vector>

#include <punch/disasm/instruction.hpp>
#include <punch/result.hpp>

#include "checked_site.hpp"
#include "site_decodes.hpp"

namespace punch::patcher::live {

// Where each container's sites and extents are found again (sites come in address order).
struct ContainerIndex {
  std::vector<std::pair<std::uintptr_t, std::uint32_t>> by_start;  // Symbol and heap containers, by start.
  std::uintptr_t max_end = 0;                                      // Of those: none holds an address at or past it.
  std::map<std::pair<std::uintptr_t, std::uintptr_t>, std::uint32_t> by_extent;  // Caller-named extents.
};

// The container already found that holds [address, end), or kNoContainer.
std::uint32_t find_container(const CheckedBatch& batch, const ContainerIndex& index, std::uintptr_t address,
                             std::uintptr_t end);

// Reads [start, end) into the batch. Heap allocations are read directly: the
// global heap never unmaps an arena and keeps it readable, so this cannot
// fault; anything else goes through the safe read.
Status read_container(CheckedBatch& batch, Container& box, bool in_heap);

// The sites of one container, by address.
struct Members {
  std::span<const std::uint32_t> indexes;  // Into `sites`, ascending by address.
  const std::vector<CheckedSite>& sites;

  std::size_t size() const { return indexes.size(); }
  const CheckedSite& operator[](std::size_t k) const { return sites[indexes[k]]; }
  // The site with address <= a < end, or null.
  const CheckedSite* holding(std::uintptr_t a) const {
    auto it = std::upper_bound(indexes.begin(), indexes.end(), a,
                               [&](std::uintptr_t x, std::uint32_t m) { return x < sites[m].address; });
    if (it == indexes.begin()) return nullptr;
    const CheckedSite& s = sites[*std::prev(it)];
    return a < s.end() ? &s : nullptr;
  }
};

// holding() for ascending addresses (instructions in order): a walk, not a
// search per address, which cost most of a large container's check.
struct SiteCursor {
  const Members& sites;
  std::size_t next = 0;  // The first site that does not end at or before the last address asked.

  const CheckedSite* holding(std::uintptr_t a) {
    while (next < sites.size() && sites[next].end() <= a) ++next;
    return next < sites.size() && sites[next].address <= a ? &sites[next] : nullptr;
  }
};

// What the transaction already decoded of each site's bytes (see SiteDecodes).
struct Known {
  const SiteDecodes* decodes = nullptr;  // Null: nothing.
  Direction direction = Direction::kApply;

  // The instructions of `c`'s old (or new) bytes, or empty: decode them.
  std::span<const disasm::Instruction> of(const CheckedSite& c, bool new_code) const noexcept {
    if (!decodes) return {};
    return decodes->of(c.index, new_code == (direction == Direction::kApply));  // Applying: new = replacement.
  }
};

// Whether `byte`, at an instruction boundary, is a whole one-byte instruction
// that branches nowhere the scan looks: int3, ret (a return goes back to a
// caller, never into a range) or nop. No prefix can precede it there, and no
// longer instruction starts with it.
inline bool branchless_one_byte(std::uint8_t byte) { return byte == 0xCC || byte == 0xC3 || byte == 0x90; }

// Decodes `code` from its first byte until its end or the first undecodable
// byte; returns whether it reached the end. One-byte instructions that branch
// nowhere (int3, ret, nop) are stepped over without decoding and left out of
// the list, wherever they are: heap allocations end in a ret and many int3s,
// and the branch scan has nothing to look at in them (a site whose own
// instructions are not all in the list gets an exact decode of its own, see
// check_container). A site reached at its first byte holds its old bytes
// (compared before), whose instructions may be known. So the list is a
// function of the code's address and bytes alone, whatever the sites: what
// lets the ContainerMemo keep it from one transaction to the next.
bool decode_container(disasm::CodeSpan code, const Members& sites, const Known& known,
                      std::vector<disasm::Instruction>& out);

}  // namespace punch::patcher::live
