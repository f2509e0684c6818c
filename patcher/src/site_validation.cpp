// Site validation: the write policy, expected bytes, instruction boundaries,
// whole replacement instructions, branches into the range, overlap.
//
// Sites are grouped by the code that holds them (their container) so that each
// container is read once and decoded once, whatever the number of sites in it:
// a batch of 1,000 call sites in one function costs one read, one boundary
// decode and one branch scan.
#include "site_validation.hpp"

#include <algorithm>
#include <map>

#include <punch/disasm/instruction.hpp>
#include <punch/disasm/relocate.hpp>
#include <punch/runtime/code_heap.hpp>
#include <punch/runtime/maps.hpp>
#include <punch/runtime/safe_read.hpp>


namespace punch::patcher::live {
namespace {

using disasm::FunctionExtent;

// Heap allocations are searched for at most this far around a site.
constexpr std::uintptr_t kMaxAllocationSpan = std::uintptr_t{1} << 26;

Error with_site(std::size_t index, std::uintptr_t address, Error e) {
  e.message = site_name(index, address) + ": " + e.message;
  return e;
}

runtime::CodeHeap* global_heap() {
  auto heap = runtime::CodeHeap::global();
  return heap ? *heap : nullptr;
}

// The live heap allocation that holds [address, address+size), found with
// owns() by binary search (the heap has no lookup from an interior address).
std::optional<FunctionExtent> heap_allocation_holding(runtime::CodeHeap* heap, std::uintptr_t address,
                                                      std::size_t size) {
  if (!heap || !heap->owns(address, size)) return std::nullopt;
  // Smallest start s with owns(s, address + size - s).
  std::uintptr_t lo = address > kMaxAllocationSpan ? address - kMaxAllocationSpan : 0, hi = address;
  while (lo < hi) {
    std::uintptr_t mid = lo + (hi - lo) / 2;
    if (heap->owns(mid, address + size - mid)) hi = mid; else lo = mid + 1;
  }
  const std::uintptr_t start = lo;
  // Largest length l with owns(start, l).
  std::size_t lo_len = address + size - start, hi_len = lo_len + kMaxAllocationSpan;
  while (lo_len < hi_len) {
    std::size_t mid = lo_len + (hi_len - lo_len + 1) / 2;
    if (heap->owns(start, mid)) lo_len = mid; else hi_len = mid - 1;
  }
  return FunctionExtent{start, start + lo_len, FunctionExtent::Source::kCaller};
}

using runtime::Mapping;
using MemoryMap = std::vector<Mapping>;

// The mappings that cover [address, address+size), in order, or kNotMapped
// naming the first address that no mapping covers.
Result<std::vector<const Mapping*>> covering(const MemoryMap& map, std::uintptr_t address, std::size_t size) {
  std::vector<const Mapping*> out;
  auto it = std::upper_bound(map.begin(), map.end(), address,
                             [](std::uintptr_t a, const Mapping& m) { return a < m.start; });
  if (it != map.begin()) --it;
  for (std::uintptr_t next = address; next < address + size; next = out.back()->end, ++it) {
    if (it == map.end() || !it->contains(next))
      return fail(ErrorCode::kNotMapped, at(next) + ": not mapped (no line of /proc/self/maps covers it)");
    out.push_back(&*it);
  }
  return out;
}

struct Group {
  std::shared_ptr<Container> container;
  std::vector<std::size_t> members;  // Indices into the checked list, by address.
};

// Write policy (issue 6): only executable mappings unless opted in; never MAP_SHARED
// (pwrite fails there, and other processes would see the change) unless the
// punch heap owns it (dual-map arenas are memfd shared mappings by design).
Result<bool> check_policy(const MemoryMap& map, runtime::CodeHeap* heap, const Site& site, std::size_t index,
                          const TransactionOptions& options) {
  const std::size_t n = site.expected.size();
  auto covered = covering(map, site.address, n);
  if (!covered) return tl::unexpected(with_site(index, site.address, std::move(covered).error()));
  bool any_exec = false, any_data = false;
  for (const Mapping* m : *covered) {
    if (m->shared && !(heap && heap->owns(site.address, n)))
      return fail(ErrorCode::kPolicy, site_name(index, site.address) + ": lies in a MAP_SHARED mapping [" +
                                          at(m->start) + ", " + at(m->end) + ") " + m->path +
                                          "; punch patches only private mappings");
    (m->executable ? any_exec : any_data) = true;
  }
  if (any_data && !options.allow_non_executable)
    return fail(ErrorCode::kPolicy, site_name(index, site.address) +
                                        ": lies in a non-executable mapping; set "
                                        "TransactionOptions::allow_non_executable to patch data");
  if (any_data && any_exec)
    return fail(ErrorCode::kPolicy, site_name(index, site.address) +
                                        ": straddles executable and non-executable mappings");
  return any_exec;
}

// Any call before the last instruction would let a thread return into the
// middle of the range after it changed (it is not "inside" when we look).
Status check_no_inner_call(const std::vector<disasm::Instruction>& insns, std::size_t index, std::uintptr_t address,
                           const char* which) {
  for (std::size_t i = 0; i + 1 < insns.size(); ++i)
    if (insns[i].flow == disasm::Flow::kCall || insns[i].flow == disasm::Flow::kIndirectCall)
      return fail(ErrorCode::kUnprovable, site_name(index, address) + ": the " + which + " bytes call at " +
                                              at(insns[i].address) +
                                              " before their last instruction; a thread returning from that call "
                                              "would land inside the patched range");
  return {};
}

}  // namespace

std::string site_name(std::size_t index, std::uintptr_t address) {
  return "site #" + std::to_string(index) + " at " + at(address);
}

Status check_site_shape(const Site& site) {
  if (site.expected.empty())
    return fail(ErrorCode::kInvalidArgument, at(site.address) + ": empty site (no expected bytes)");
  if (site.expected.size() != site.replacement.size())
    return fail(ErrorCode::kInvalidArgument, at(site.address) + ": expected has " +
                                                 std::to_string(site.expected.size()) + " bytes, replacement " +
                                                 std::to_string(site.replacement.size()));
  if (site.address == 0 || site.address + site.expected.size() < site.address)
    return fail(ErrorCode::kInvalidArgument, at(site.address) + ": address range is null or wraps around");
  if (site.function && !(site.function->start <= site.address && site.function->start < site.function->end &&
                         site.address + site.expected.size() <= site.function->end))
    return fail(ErrorCode::kInvalidArgument, at(site.address) + ": Site::function [" + at(site.function->start) +
                                                 ", " + at(site.function->end) + ") does not hold the site");
  return {};
}

Result<std::vector<CheckedSite>> check_sites(std::span<const Site> sites, const TransactionOptions& options,
                                             Direction direction, ErrorCode mismatch) {
  if (sites.empty()) return std::vector<CheckedSite>{};
  for (std::size_t i = 0; i < sites.size(); ++i)
    if (auto s = check_site_shape(sites[i]); !s) return tl::unexpected(with_site(i, sites[i].address, s.error()));

  // Sorted by address; overlap.
  std::vector<std::size_t> order(sites.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return sites[a].address < sites[b].address; });
  for (std::size_t k = 1; k < order.size(); ++k) {
    const Site& a = sites[order[k - 1]];
    const Site& b = sites[order[k]];
    if (b.address < a.address + a.expected.size())
      return fail(ErrorCode::kOverlap, site_name(order[k], b.address) + " overlaps " +
                                           site_name(order[k - 1], a.address) + " (" +
                                           std::to_string(a.expected.size()) + " bytes)");
  }

  auto map = runtime::read_mappings();  // Once per validation, not per site.
  if (!map) return tl::unexpected(std::move(map).error());
  runtime::CodeHeap* heap = global_heap();

  std::vector<CheckedSite> checked;
  checked.reserve(sites.size());
  std::vector<Group> groups;
  std::vector<std::size_t> group_of;  // Per checked site; SIZE_MAX for data sites.
  for (std::size_t index : order) {
    const Site& site = sites[index];
    const std::size_t n = site.expected.size();
    CheckedSite c;
    c.index = index;
    c.address = site.address;
    c.from = direction == Direction::kApply ? site.expected : site.replacement;
    c.to = direction == Direction::kApply ? site.replacement : site.expected;
    auto is_code = check_policy(*map, heap, site, index, options);
    if (!is_code) return tl::unexpected(std::move(is_code).error());
    c.is_code = *is_code;
    if (!c.is_code) {
      // Data: only the expected bytes matter; no instructions to check.
      auto now = runtime::safe_read_exact(site.address, n);
      if (!now) return tl::unexpected(with_site(index, site.address, std::move(now).error()));
      if (*now != c.from)
        return fail(mismatch, site_name(index, site.address) + ": the bytes there are not the expected ones");
      checked.push_back(std::move(c));
      group_of.push_back(SIZE_MAX);
      continue;
    }

    // The container: the caller's extent, one already found, the ELF symbol, the heap allocation.
    std::optional<FunctionExtent> extent = site.function;
    std::size_t g = groups.size();
    if (!extent) {
      for (std::size_t i = 0; i < groups.size(); ++i)
        if (groups[i].container->start <= site.address && site.address + n <= groups[i].container->end &&
            groups[i].container->source != FunctionExtent::Source::kBoundedScan) {
          g = i;
          break;
        }
    } else {
      for (std::size_t i = 0; i < groups.size(); ++i)
        if (groups[i].container->start == extent->start && groups[i].container->end == extent->end) g = i;
    }
    if (g == groups.size()) {
      if (!extent) {
        if (auto symbol = disasm::function_extent(site.address); symbol && site.address + n <= symbol->end)
          extent = *symbol;
        else if (auto block = heap_allocation_holding(heap, site.address, n))
          extent = *block;
        else if (options.allow_unprovable)
          extent = FunctionExtent{site.address, site.address + n, FunctionExtent::Source::kBoundedScan};
        else
          return fail(ErrorCode::kUnprovable,
                      site_name(index, site.address) +
                          ": no ELF symbol and no punch heap allocation holds it, so its instruction boundaries "
                          "and the branches into it cannot be checked (a bounded scan would decode only the site "
                          "itself, from its first byte); pass Site::function or allow_unprovable");
      }
      auto bytes = runtime::safe_read_exact(extent->start, extent->end - extent->start);
      if (!bytes) return tl::unexpected(with_site(index, site.address, std::move(bytes).error()));
      auto container = std::make_shared<Container>();
      container->start = extent->start;
      container->end = extent->end;
      container->source = extent->source;
      container->stable = extent->source != FunctionExtent::Source::kBoundedScan;
      container->bytes = std::move(*bytes);
      groups.push_back(Group{std::move(container), {}});
    }
    const Container& box = *groups[g].container;
    auto now = std::span<const std::uint8_t>(box.bytes).subspan(site.address - box.start, n);
    for (std::size_t i = 0; i < n; ++i)
      if (now[i] != c.from[i])
        return fail(mismatch, site_name(index, site.address) + ": byte at " + at(site.address + i) + " is " +
                                  std::to_string(now[i]) + ", expected " + std::to_string(c.from[i]) +
                                  (mismatch == ErrorCode::kConflict ? " (changed since validation)" : ""));
    groups[g].members.push_back(checked.size());
    checked.push_back(std::move(c));
    group_of.push_back(g);
  }

  // Per container: boundaries over the hull of its sites, then each site against them; one branch scan.
  for (Group& group : groups) {
    const Container& box = *group.container;
    std::sort(group.members.begin(), group.members.end(),
              [&](std::size_t a, std::size_t b) { return checked[a].address < checked[b].address; });
    const disasm::CodeSpan code{box.start, box.bytes};
    const std::uintptr_t lo = checked[group.members.front()].address;
    std::uintptr_t hi = 0;
    for (std::size_t m : group.members) hi = std::max(hi, checked[m].end());
    auto hull = disasm::check_boundaries(code, lo, hi);
    std::vector<disasm::Instruction> insns;
    if (hull) insns = std::move(*hull);
    for (std::size_t m : group.members) {
      CheckedSite& c = checked[m];
      std::vector<disasm::Instruction> own;
      if (hull) {
        auto first = std::lower_bound(insns.begin(), insns.end(), c.address,
                                      [](const disasm::Instruction& i, std::uintptr_t a) { return i.address < a; });
        auto last = first;
        while (last != insns.end() && last->address < c.end()) ++last;
        const bool starts_ok = first != insns.end() && first->address == c.address;
        const bool ends_ok = starts_ok && std::prev(last)->end() == c.end();
        if (starts_ok && ends_ok) own.assign(first, last);
      }
      if (own.empty()) {  // Off a boundary (or the hull failed): the exact reason for this site.
        auto exact = disasm::check_boundaries(code, c.address, c.end());
        if (!exact) return tl::unexpected(with_site(c.index, c.address, std::move(exact).error()));
        own = std::move(*exact);
      }
      c.from_instructions = own.size();
      auto replacement = disasm::check_replacement(disasm::CodeSpan{c.address, c.to});
      if (!replacement) return tl::unexpected(with_site(c.index, c.address, std::move(replacement).error()));
      c.to_instructions = replacement->size();
      PUNCH_TRY(check_no_inner_call(own, c.index, c.address, "current"));
      PUNCH_TRY(check_no_inner_call(*replacement, c.index, c.address, "new"));
      // New code of several instructions must itself be relocatable, or undoing
      // it live (revert, or a rollback) could not move threads out of it.
      if (replacement->size() > 1 && replacement->back().flow == disasm::Flow::kIndirectCall)
        return fail(ErrorCode::kCannotRelocate, site_name(c.index, c.address) +
                                                    ": the new code ends in an indirect call after other "
                                                    "instructions; it could not be undone live (no out-of-line copy "
                                                    "can keep that call's return address)");
      if (replacement->size() > 1)
        if (auto dry = disasm::relocate(disasm::CodeSpan{c.address, c.to}, c.address); !dry)
          return fail(ErrorCode::kCannotRelocate, site_name(c.index, c.address) +
                                                      ": the new code could not be undone live (it cannot run out "
                                                      "of line): " + dry.error().message);
      c.container = group.container;
    }
    if (box.source == FunctionExtent::Source::kBoundedScan) continue;

    auto scan = disasm::scan_branches(code, lo, hi);
    if (!scan) return tl::unexpected(with_site(checked[group.members.front()].index, lo, std::move(scan).error()));
    if (direction == Direction::kRevert)  // Indirect jumps this transaction put there do not block its undo.
      std::erase_if(scan->indirect_jumps, [&](std::uintptr_t jump) {
        return std::any_of(group.members.begin(), group.members.end(), [&](std::size_t m) {
          return jump >= checked[m].address && jump < checked[m].end();
        });
      });
    if (!options.allow_unprovable) {
      if (!scan->indirect_jumps.empty())
        return fail(ErrorCode::kUnprovable,
                    site_name(checked[group.members.front()].index, lo) + ": the code [" + at(box.start) + ", " +
                        at(box.end) + ") has an indirect jump at " + at(scan->indirect_jumps.front()) +
                        " whose targets cannot be checked; set allow_unprovable to accept");
      if (!scan->complete)
        return fail(ErrorCode::kUnprovable, site_name(checked[group.members.front()].index, lo) +
                                                ": the branch scan of [" + at(box.start) + ", " + at(box.end) +
                                                ") stopped at undecodable bytes; set allow_unprovable to accept");
    }
    for (std::uintptr_t source : scan->branches_into) {
      auto branch = disasm::decode(code, source);
      if (!branch || !branch->has_branch_target) continue;
      for (std::size_t m : group.members) {
        const CheckedSite& c = checked[m];
        const bool internal = source >= c.address && source < c.end();  // Relocated along with the site.
        if (!internal && branch->branch_target > c.address && branch->branch_target < c.end())
          return fail(ErrorCode::kBranchInto, site_name(c.index, c.address) + ": the branch `" +
                                                  disasm::format(code, source) + "` at " + at(source) +
                                                  " lands at " + at(branch->branch_target) + ", inside the site");
      }
    }
  }
  return checked;
}

}  // namespace punch::patcher::live
