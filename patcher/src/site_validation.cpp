// Site validation: the write policy, expected bytes, instruction boundaries,
// whole replacement instructions, branches into the range, overlap.
//
// Sites are grouped by the code that holds them (their container) so that each
// container is read once and decoded once, whatever the number of sites in it:
// a batch of 1,000 call sites in one function costs one read and one decode,
// whose instruction list serves the boundary check, the branch scan and the
// out-of-line copies. Mappings are looked up per address (one PROCMAP_QUERY)
// and reused for every site the same mapping holds; sites in the heap's own
// allocations need none. Success costs no string.
#include "site_validation.hpp"

#include "branch_index.hpp"
#include "function_extent.hpp"
#include "out_of_line.hpp"
#include "site_decodes.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <tuple>
#include <utility>

#include <punch/disasm/instruction_facts.hpp>
#include <punch/disasm/relocate.hpp>
#include <punch/runtime/code_heap.hpp>
#include <punch/runtime/maps.hpp>
#include <punch/runtime/safe_read.hpp>

namespace punch::patcher::live {
namespace {

using disasm::FunctionExtent;

// `e` about site #index: its message after the site's name, its address the
// site's unless it names a more precise one.
Error with_site(std::size_t index, std::uintptr_t address, Error e) {
  if (e.address == 0) e.address = address;
  return std::move(e).with_context(site_name(index, address));
}

// A byte as messages print it, like a disassembly's bytes: "0x0f".
std::string hex(std::uint8_t byte) {
  char buf[5];
  std::snprintf(buf, sizeof buf, "0x%02x", byte);
  return buf;
}

// An error about site #index: "site #2 at 0x7f...: message", with its address.
tl::unexpected<Error> site_error(ErrorCode code, std::size_t index, std::uintptr_t address, std::string message) {
  return fail(Error{code, site_name(index, address) + ": " + message, address});
}

// The live allocation of the global heap that holds each of `addresses`
// (empty ranges where none does), looked up under one heap lock for the batch.
std::vector<runtime::CodeRange> heap_blocks(std::span<const std::uintptr_t> addresses) {
  auto heap = runtime::CodeHeap::global();
  if (!heap) return std::vector<runtime::CodeRange>(addresses.size());
  return (*heap)->allocations_holding(addresses);
}

// The mappings sites lie in, each queried once per validation (sites of one
// arena or one library share a mapping).
class MappingCache {
 public:
  // The mapping holding `address`, or kNotMapped naming it.
  Result<const runtime::Mapping*> holding(std::uintptr_t address) {
    auto it = std::upper_bound(known_.begin(), known_.end(), address,
                               [](std::uintptr_t a, const runtime::Mapping& m) { return a < m.start; });
    if (it != known_.begin() && std::prev(it)->contains(address)) return &*std::prev(it);
    auto found = runtime::query_mapping(address);
    if (!found) return tl::unexpected(std::move(found).error());
    return &*known_.insert(it, std::move(*found));
  }

 private:
  std::vector<runtime::Mapping> known_;  // Sorted by start, disjoint.
};

// Write policy: only executable mappings unless opted in; never MAP_SHARED
// (pwrite fails there, and other processes would see the change). Sites in
// a live heap allocation are not looked up: the heap's arenas are R+X code
// by construction, never unmapped (dual-map arenas are memfd shared mappings
// by design), and a batch of them then costs no PROCMAP_QUERY at all.
Result<bool> check_policy(MappingCache& maps, const Site& site, std::size_t index,
                          const TransactionOptions& options) {
  const std::uintptr_t end = site.address + site.expected.size();
  bool any_exec = false, any_data = false;
  for (std::uintptr_t next = site.address; next < end;) {
    auto m = maps.holding(next);
    if (!m) return tl::unexpected(with_site(index, site.address, std::move(m).error()));
    const runtime::Mapping& mapping = **m;
    if (mapping.shared)
      return site_error(ErrorCode::kPolicy, index, site.address,
                        "lies in a MAP_SHARED mapping [" + at(mapping.start) + ", " + at(mapping.end) + ") " +
                            mapping.path + "; punch patches only private mappings");
    (mapping.executable ? any_exec : any_data) = true;
    next = mapping.end;
  }
  if (any_data && !options.allow_non_executable)
    return site_error(ErrorCode::kPolicy, index, site.address,
                      "lies in a non-executable mapping; set TransactionOptions::allow_non_executable to patch data");
  if (any_data && any_exec)
    return site_error(ErrorCode::kPolicy, index, site.address, "straddles executable and non-executable mappings");
  return any_exec;
}

// Where each container's sites and extents are found again (sites come in address order).
struct ContainerIndex {
  std::vector<std::pair<std::uintptr_t, std::uint32_t>> by_start;  // Symbol and heap containers, by start.
  std::uintptr_t max_end = 0;                        // Of those: none holds an address at or past it.
  std::map<std::pair<std::uintptr_t, std::uintptr_t>, std::uint32_t> by_extent;  // Caller-named extents.
};

// The container already found that holds [address, end), or kNoContainer.
std::uint32_t find_container(const CheckedBatch& batch, const ContainerIndex& index, std::uintptr_t address,
                             std::uintptr_t end) {
  auto holds = [&](std::uint32_t c) {
    const Container& box = batch.containers[c];
    return box.source != FunctionExtent::Source::kBoundedScan && box.start <= address && end <= box.end;
  };
  if (!batch.containers.empty() && holds(static_cast<std::uint32_t>(batch.containers.size() - 1)))
    return static_cast<std::uint32_t>(batch.containers.size() - 1);  // The usual case: the previous site's.
  if (index.max_end <= address && index.by_extent.empty()) return kNoContainer;  // Past them all: the next usual one.
  auto it = std::upper_bound(index.by_start.begin(), index.by_start.end(), address,
                             [](std::uintptr_t a, const auto& entry) { return a < entry.first; });
  if (it != index.by_start.begin() && holds(std::prev(it)->second)) return std::prev(it)->second;
  if (index.max_end > address || !index.by_extent.empty())  // Nested or caller-named extents: look at all.
    for (std::uint32_t c = 0; c < batch.containers.size(); ++c)
      if (holds(c)) return c;
  return kNoContainer;
}

// Reads [start, end) into the batch. Heap allocations are read directly: the
// global heap never unmaps an arena and keeps it readable, so this cannot
// fault; anything else goes through the safe read.
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
// caller, never into a range) or nop. No prefix can precede it there.
bool branchless_one_byte(std::uint8_t byte) { return byte == 0xCC || byte == 0xC3 || byte == 0x90; }

// Decodes `code` from its first byte until its end or the first undecodable
// byte; returns whether it reached the end. One-byte instructions that branch
// nowhere (int3, ret, nop) outside every site (`sites`) are stepped over
// without decoding: heap allocations end in a ret and many int3s, and the
// branch scan has nothing to look at in them. A site reached at its first
// byte holds its old bytes (compared before), whose instructions may be known.
bool decode_container(disasm::CodeSpan code, const Members& sites, const Known& known,
                      std::vector<disasm::Instruction>& out) {
  out.clear();
  SiteCursor cursor{sites};
  for (std::uintptr_t a = code.address; a < code.end();) {
    const CheckedSite* site = cursor.holding(a);
    if (!site && branchless_one_byte(code.bytes[a - code.address])) {  // The whole run, up to the next site.
      const std::uintptr_t stop = cursor.next < sites.size() ? sites[cursor.next].address : code.end();
      while (a < stop && branchless_one_byte(code.bytes[a - code.address])) ++a;
      continue;
    }
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

// A branch of one site's new code to a point strictly inside another site of
// its container: new code that branches into another site could not be undone
// live (a thread there during the revert would land inside code being
// rewritten), so the commit refuses it.
struct BranchIntoSite {
  const CheckedSite* into = nullptr;  // Null: none found.
  const CheckedSite* from = nullptr;
  std::uintptr_t branch = 0, target = 0;
};

// Checks the new bytes of a code site: whole instructions, no call before the
// last, undoable live. Decodes once and without allocating (not at all when
// `known` holds its instructions), and notes in `first_into` the first branch
// into another of `others` (null: not checked); disasm's own checks give the
// exact message when something is wrong.
Status check_new_code(CheckedSite& c, std::span<const disasm::Instruction> known, const Members* others, CopyRoom room,
                      BranchIntoSite& first_into) {
  const disasm::CodeSpan code{c.address, c.to};
  std::uint32_t count = 0;
  bool plain = true, decoded = true;
  // Where an out-of-line copy of the new code (needed to undo it live) could
  // live: within rel32 reach of the site and of every RIP-relative operand.
  runtime::AddressWindow copy_window =
      runtime::AddressWindow::rel32_reach(c.address).intersect(runtime::AddressWindow::rel32_reach(c.end()));
  std::uintptr_t far_operand = 0;
  bool reads_data = false;
  for (std::uintptr_t a = c.address; a < code.end(); ++count) {
    auto insn = count < known.size() ? Result<disasm::Instruction>(known[count]) : disasm::decode(code, a);
    if (!insn) {
      decoded = false;
      break;
    }
    if (disasm::reads_data_outside(*insn, c.address, c.end())) {  // Data of the site itself moves with a copy.
      reads_data = true;
      copy_window = copy_window.intersect(runtime::AddressWindow::rel32_reach(insn->memory_target));
      if (copy_window.empty() && !far_operand) far_operand = insn->address;
    }
    // A thread returning from a call before the last instruction would land
    // inside the range after it changed (it is not "inside" when we look).
    if (auto s = disasm::check_call_is_last(code, *insn, c.end()); !s)
      return fail(with_site(c.index, c.address, std::move(s).error().with_context("its new code")));
    if (insn->has_branch_target && others && !first_into.into) {
      const CheckedSite* into = others->holding(insn->branch_target);
      if (into && insn->branch_target != into->address && into != &c)
        first_into = {into, &c, insn->address, insn->branch_target};
    }
    plain = plain && disasm::runs_anywhere(*insn);
    a = insn->end();
  }
  if (!decoded) {
    auto exact = disasm::check_replacement(code);
    if (!exact) return tl::unexpected(with_site(c.index, c.address, std::move(exact).error()));
    return site_error(ErrorCode::kInvalidArgument, c.index, c.address, "the new bytes do not decode");
  }
  c.to_instructions = count;
  c.to_plain = plain;
  // New code of several instructions must itself be relocatable, or undoing
  // it live (revert, or a rollback) could not move threads out of it.
  if (count > 1 && far_operand)
    return site_error(ErrorCode::kCannotRelocate, c.index, c.address,
                      "the new code could not be undone live: the RIP-relative operand at " + at(far_operand) +
                          " is too close to the edge of rel32 reach for any out-of-line copy near the site to "
                          "reach it");
  if (count > 1 && !plain)
    if (auto dry = disasm::relocate(code, c.address, {.final_call_as_jump = true}); !dry)
      return site_error(ErrorCode::kCannotRelocate, c.index, c.address,
                        "the new code could not be undone live (it cannot run out of line): " +
                            dry.error().message);
  // Its copy must find memory in that window when the time comes: make sure
  // the heap has some there now (when reserving, an arena mapped for it
  // stays). The window can be narrow, and the address space there taken (the
  // fuzzer found such commits, whose revert was then refused).
  if (count > 1 && reads_data) {
    PUNCH_TRY_ASSIGN(runtime::CodeHeap* const heap, runtime::CodeHeap::global());
    auto bound = disasm::relocated_size_bound(code);
    const std::size_t size = (bound ? *bound : c.to.size() * 4) + kCopyTailBound;
    if (auto found = room == CopyRoom::kReserve ? heap->reserve_room(size, 16, copy_window)
                                                : heap->has_room(size, 16, copy_window);
        !found)
      return site_error(ErrorCode::kCannotRelocate, c.index, c.address,
                        "the new code could not be undone live: no memory within reach of its RIP-relative "
                        "operands for an out-of-line copy (" +
                            found.error().message + ")");
  }
  return {};
}

// Boundaries of every site of one container against its decoded instructions,
// then the branch scan over the same list. `members` are the container's
// sites, by address.
Status check_container(CheckedBatch& batch, std::uint32_t container, std::span<const std::uint32_t> members,
                       const Known& known, std::vector<disasm::Instruction>& decoded, const TransactionOptions& options,
                       CopyRoom room) {
  const Container& box = batch.containers[container];
  const disasm::CodeSpan code{box.start, batch.bytes_of(box)};
  const Members sites{members, batch.sites};
  const bool scan = box.source != FunctionExtent::Source::kBoundedScan;  // A bounded scan has no branch scan.
  const bool complete = decode_container(code, sites, known, decoded);

  BranchIntoSite new_into;
  auto first = decoded.begin();
  for (std::uint32_t m : members) {
    CheckedSite& c = batch.sites[m];
    while (first != decoded.end() && first->address < c.address) ++first;  // Both run by address.
    auto last = first;
    while (last != decoded.end() && last->address < c.end()) ++last;
    const bool aligned = first != decoded.end() && first->address == c.address && std::prev(last)->end() == c.end();
    c.from_begin = static_cast<std::uint32_t>(batch.instructions.size());
    if (aligned) {
      batch.instructions.insert(batch.instructions.end(), first, last);
    } else {  // Off a boundary (or undecodable): disasm names the exact reason.
      auto exact = disasm::check_boundaries(code, c.address, c.end());
      if (!exact) return tl::unexpected(with_site(c.index, c.address, std::move(exact).error()));
      batch.instructions.insert(batch.instructions.end(), exact->begin(), exact->end());
    }
    c.from_instructions = static_cast<std::uint32_t>(batch.instructions.size() - c.from_begin);
    const auto own = batch.old_instructions(c);
    c.from_plain = std::all_of(own.begin(), own.end(), disasm::runs_anywhere);
    for (const disasm::Instruction& insn : own)
      if (auto s = disasm::check_call_is_last(code, insn, c.end()); !s)
        return fail(with_site(c.index, c.address, std::move(s).error().with_context("its current code")));
    PUNCH_TRY(check_new_code(c, known.of(c, true), scan ? &sites : nullptr, room, new_into));
  }
  if (!scan) return {};

  // The branch scan, of the code as it will be (found by check_new_code) ...
  if (const BranchIntoSite& b = new_into; b.into)
    return site_error(ErrorCode::kBranchInto, b.into->index, b.into->address,
                      "the new code of " + site_name(b.from->index, b.from->address) + " branches from " +
                          at(b.branch) + " to " + at(b.target) + ", inside the site");
  // ... and as it is. Instructions inside a site being replaced disappear with
  // the patch: an indirect jump there proves nothing either way, and a branch
  // from a site into its own range is relocated along with it.
  std::uintptr_t indirect = 0;
  SiteCursor cursor{sites};
  for (const disasm::Instruction& insn : decoded) {
    const CheckedSite* home = cursor.holding(insn.address);
    if (insn.flow == disasm::Flow::kIndirectJump && !home && !indirect) indirect = insn.address;
    if (!insn.has_branch_target) continue;
    const CheckedSite* into = sites.holding(insn.branch_target);
    if (into && insn.branch_target != into->address && into != home)
      return site_error(ErrorCode::kBranchInto, into->index, into->address,
                        "the branch `" + disasm::format(code, insn.address) + "` at " + at(insn.address) +
                            " lands at " + at(insn.branch_target) + ", inside the site");
  }
  if (options.allow_unprovable) return {};
  const CheckedSite& front = batch.sites[members.front()];
  if (indirect)
    return site_error(ErrorCode::kUnprovable, front.index, front.address,
                      "the code [" + at(box.start) + ", " + at(box.end) + ") has an indirect jump at " + at(indirect) +
                          " whose targets cannot be checked; set allow_unprovable to accept");
  if (!complete)
    return site_error(ErrorCode::kUnprovable, front.index, front.address,
                      "the branch scan of [" + at(box.start) + ", " + at(box.end) +
                          ") stopped at undecodable bytes; set allow_unprovable to accept");
  return {};
}

}  // namespace

std::string site_name(std::size_t index, std::uintptr_t address) {
  return "site #" + std::to_string(index) + " at " + at(address);
}

Status check_site_shape(const Site& site) {
  if (site.expected.empty()) return fail(ErrorCode::kInvalidArgument, site.address, "empty site (no expected bytes)");
  if (site.expected.size() != site.replacement.size())
    return fail(ErrorCode::kInvalidArgument, site.address,
                "expected has " + std::to_string(site.expected.size()) + " bytes, replacement " +
                    std::to_string(site.replacement.size()));
  if (site.address == 0 || site.address + site.expected.size() < site.address)
    return fail(ErrorCode::kInvalidArgument, site.address, "address range is null or wraps around");
  if (site.function && !(site.function->start <= site.address && site.function->start < site.function->end &&
                         site.address + site.expected.size() <= site.function->end))
    return fail(
        ErrorCode::kInvalidArgument, site.address,
        "Site::function [" + at(site.function->start) + ", " + at(site.function->end) + ") does not hold the site");
  return {};
}

Result<CheckedBatch> check_sites(std::span<const Site> sites, const TransactionOptions& options, Direction direction,
                                 ErrorCode mismatch, CopyRoom room, const SiteFacts& known) {
  CheckedBatch batch;
  if (sites.empty()) return batch;
  for (std::size_t i = 0; i < sites.size(); ++i)
    if (auto s = check_site_shape(sites[i]); !s) return tl::unexpected(with_site(i, sites[i].address, s.error()));

  // Sorted by address (unless the caller knows the order); overlap. (Pairs:
  // sorting then reads one array, not every Site.)
  std::vector<std::uint32_t> order(sites.size());
  std::vector<std::uintptr_t> addresses(sites.size());
  if (known.by_address.size() == sites.size()) {
    for (std::size_t k = 0; k < order.size(); ++k) addresses[k] = sites[order[k] = known.by_address[k]].address;
  } else {
    std::vector<std::pair<std::uintptr_t, std::uint32_t>> sorted(sites.size());  // (address, index)
    for (std::uint32_t i = 0; i < sorted.size(); ++i) sorted[i] = {sites[i].address, i};
    if (!std::is_sorted(sorted.begin(), sorted.end())) std::sort(sorted.begin(), sorted.end());
    for (std::size_t k = 0; k < sorted.size(); ++k) std::tie(addresses[k], order[k]) = sorted[k];
  }
  for (std::size_t k = 1; k < order.size(); ++k) {
    const Site& a = sites[order[k - 1]];
    const Site& b = sites[order[k]];
    if (b.address < a.address + a.expected.size())
      return fail(ErrorCode::kOverlap, site_name(order[k], b.address) + " overlaps " +
                                           site_name(order[k - 1], a.address) + " (" +
                                           std::to_string(a.expected.size()) + " bytes)");
  }

  const std::vector<runtime::CodeRange> blocks = heap_blocks(addresses);
  MappingCache maps;
  ContainerIndex index;
  batch.sites.reserve(sites.size());
  batch.containers.reserve(sites.size());  // At most one per site; untouched capacity costs nothing.
  index.by_start.reserve(sites.size());
  for (std::size_t k = 0; k < order.size(); ++k) {
    const std::uint32_t i = order[k];
    const Site& site = sites[i];
    const std::size_t n = site.expected.size();
    // The heap allocation that holds the whole site, if any.
    const bool in_heap = blocks[k].contains(site.address) && site.address + n <= blocks[k].end;
    CheckedSite c;
    c.index = i;
    c.address = site.address;
    c.from = direction == Direction::kApply ? site.expected : site.replacement;
    c.to = direction == Direction::kApply ? site.replacement : site.expected;
    auto is_code = in_heap ? Result<bool>(true) : check_policy(maps, site, i, options);
    if (!is_code) return tl::unexpected(std::move(is_code).error());
    c.is_code = *is_code;
    if (!c.is_code) {
      // Data: only the expected bytes matter; no instructions to check.
      auto now = runtime::safe_read_exact(site.address, n);
      if (!now) return tl::unexpected(with_site(i, site.address, std::move(now).error()));
      if (!std::equal(now->begin(), now->end(), c.from.begin(), c.from.end()))
        return site_error(mismatch, i, site.address, "the bytes there are not the expected ones");
      batch.sites.push_back(c);
      continue;
    }

    // The container: the caller's extent, one already found, the heap allocation, the ELF symbol.
    std::uint32_t g = kNoContainer;
    if (site.function) {
      auto it = index.by_extent.find({site.function->start, site.function->end});
      if (it != index.by_extent.end()) g = it->second;
    } else {
      g = find_container(batch, index, site.address, site.address + n);
    }
    if (g == kNoContainer) {
      Container box;
      if (site.function) {
        // Scanned in full whatever source the caller claims: only punch's own
        // fallback below (allow_unprovable, no extent known) skips the scan.
        box = Container{site.function->start, site.function->end, FunctionExtent::Source::kCaller};
      } else if (in_heap) {
        // Before the symbol lookup: a heap allocation is never inside a loaded object.
        box = Container{blocks[k].begin, blocks[k].end, FunctionExtent::Source::kCaller};
      } else if (auto symbol = detail::function_extent(site.address); symbol && site.address + n <= symbol->end) {
        box = Container{symbol->start, symbol->end, symbol->source};
      } else if (options.allow_unprovable) {
        box = Container{site.address, site.address + n, FunctionExtent::Source::kBoundedScan};
      } else {
        return fail(ErrorCode::kUnprovable,
                    site_name(i, site.address) +
                        ": no symbol, unwind-table entry or punch heap allocation holds it, so its instruction boundaries "
                        "and the branches into it cannot be checked (a bounded scan would decode only the site "
                        "itself, from its first byte); pass Site::function or allow_unprovable");
      }
      box.stable = box.source != FunctionExtent::Source::kBoundedScan;
      if (auto read = read_container(batch, box, in_heap && !site.function); !read)
        return tl::unexpected(with_site(i, site.address, std::move(read).error()));
      g = static_cast<std::uint32_t>(batch.containers.size());
      batch.containers.push_back(box);
      if (site.function) {
        index.by_extent.emplace(std::pair{box.start, box.end}, g);
      } else if (box.source != FunctionExtent::Source::kBoundedScan) {
        // Sites come by address, so containers mostly do too: usually an append.
        auto at_start = !index.by_start.empty() && box.start < index.by_start.back().first
                            ? std::upper_bound(index.by_start.begin(), index.by_start.end(), box.start,
                                               [](std::uintptr_t a, const auto& entry) { return a < entry.first; })
                            : index.by_start.end();
        index.by_start.insert(at_start, {box.start, g});
        index.max_end = std::max(index.max_end, box.end);
      }
    }
    const Container& box = batch.containers[g];
    const auto now = batch.bytes_of(box).subspan(site.address - box.start, n);
    for (std::size_t b = 0; b < n; ++b)
      if (now[b] != c.from[b])
        return fail(Error{mismatch,
                          site_name(i, site.address) + ": byte at " + at(site.address + b) + " is " + hex(now[b]) +
                              ", expected " + hex(c.from[b]) +
                              (mismatch == ErrorCode::kConflict ? " (changed since validation)" : ""),
                          site.address + b});
    c.container = g;
    batch.sites.push_back(c);
  }

  // Per container: its sites by address (stable: batch.sites is by address already).
  std::vector<std::uint32_t> by_container;
  by_container.reserve(batch.sites.size());
  for (std::uint32_t m = 0; m < batch.sites.size(); ++m)
    if (batch.sites[m].container != kNoContainer) by_container.push_back(m);
  const auto by_box = [&](std::uint32_t a, std::uint32_t b) { return batch.sites[a].container < batch.sites[b].container; };
  if (!std::is_sorted(by_container.begin(), by_container.end(), by_box))  // Usually sorted already.
    std::stable_sort(by_container.begin(), by_container.end(), by_box);
  batch.instructions.reserve(by_container.size());
  std::vector<disasm::Instruction> decoded;
  for (std::size_t lo = 0; lo < by_container.size();) {
    const std::uint32_t g = batch.sites[by_container[lo]].container;
    std::size_t hi = lo;
    while (hi < by_container.size() && batch.sites[by_container[hi]].container == g) ++hi;
    PUNCH_TRY(check_container(batch, g, std::span(by_container).subspan(lo, hi - lo), Known{known.decodes, direction},
                              decoded, options, room));
    lo = hi;
  }
  // No branch from the rest of the loaded object may land inside a site
  // either: the container scan sees only its own code, and functions
  // tail-jump into each other's bodies. (punch's heap is in no loaded object:
  // JIT code keeps the checks above.)
  for (std::size_t k = 0; k < batch.sites.size(); ++k) {
    const CheckedSite& c = batch.sites[k];  // batch.sites[k] is the site of blocks[k].
    if (c.is_code && !(blocks[k].contains(c.address) && c.end() <= blocks[k].end))
      PUNCH_TRY(detail::check_no_branch_into({c.address, c.from}, options.allow_unprovable,
                                             site_name(c.index, c.address), "the site"));
  }
  return batch;
}

}  // namespace punch::patcher::live
