// Site validation, the driver: shapes and overlap, then per site the write
// policy (write_policy), its container and expected bytes (site_containers),
// its new code (new_code_rules), and per container the instruction
// boundaries and the branch scan (here).
//
// Sites are grouped by the code that holds them (their container) so that each
// container is read once and decoded once, whatever the number of sites in it:
// a batch of 1,000 call sites in one function costs one read and one decode,
// whose instruction list serves the boundary check, the branch scan and the
// out-of-line copies. Mappings are looked up per address (one PROCMAP_QUERY)
// and reused for every site the same mapping holds; sites in the heap's own
// allocations need none. Success costs no string.
#include "site_validation.hpp"

#include <algorithm>
#include <map>
#include <tuple>
#include <utility>

#include <punch/disasm/branch_scan.hpp>
#include <punch/disasm/instruction_facts.hpp>
#include <punch/disasm/relocate.hpp>
#include <punch/runtime/safe_read.hpp>

#include "branch_index.hpp"
#include "container_memo.hpp"
#include "function_extent.hpp"
#include "new_code_rules.hpp"
#include "site_containers.hpp"
#include "site_messages.hpp"
#include "write_policy.hpp"

namespace punch::patcher::live {
namespace {

using disasm::FunctionExtent;

// Boundaries of every site of one container against its decoded instructions,
// then the branch scan over the same list. `members` are the container's
// sites, by address; `decoded` and `ranges` are scratch space. With a
// `memo`, the list is taken from it when it holds this very code (address and
// bytes), and the list for the code as the change will leave it goes to
// batch.after.
Status check_container(CheckedBatch& batch, std::uint32_t container, std::span<const std::uint32_t> members,
                       const Known& known, ContainerMemo* memo, std::vector<disasm::Instruction>& decoded,
                       std::vector<disasm::PatchRange>& ranges, const TransactionOptions& options, CopyRoom room) {
  const Container& box = batch.containers[container];
  const disasm::CodeSpan code{box.start, batch.bytes_of(box)};
  const Members sites{members, batch.sites};
  const bool scan = box.source != FunctionExtent::Source::kBoundedScan;  // A bounded scan has no branch scan.
  // The memo keeps only lists that reached the end (complete).
  const bool complete = (memo && scan && memo->take(code, decoded)) || decode_container(code, sites, known, decoded);

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
  // ... and as it is (disasm::scan_branches: the rule, indirect jumps included).
  ranges.clear();
  for (std::size_t k = 0; k < sites.size(); ++k) ranges.push_back({sites[k].address, sites[k].end()});
  const disasm::BranchScan found = disasm::scan_branches(code, decoded, ranges, complete);
  if (!found.branches_into.empty()) {
    const disasm::BranchInto& b = found.branches_into.front();
    const CheckedSite& into = sites[b.range];
    return site_error(ErrorCode::kBranchInto, into.index, into.address,
                      "the branch `" + disasm::format(code, b.branch) + "` at " + at(b.branch) + " lands at " +
                          at(b.target) + ", inside the site");
  }
  // For the last containers only (the memo would forget the others at once:
  // a batch over 1,000 functions must not copy them all).
  if (memo && complete && container + ContainerMemo::kMaxEntries >= batch.containers.size())
    if (auto after = after_change(code, sites, known, decoded)) batch.after.push_back(std::move(*after));
  if (options.allow_unprovable) return {};
  const CheckedSite& front = batch.sites[members.front()];
  if (!found.indirect_jumps.empty())
    return site_error(ErrorCode::kUnprovable, front.index, front.address,
                      "the code [" + at(box.start) + ", " + at(box.end) + ") has an indirect jump at " +
                          at(found.indirect_jumps.front()) +
                          " whose targets cannot be checked; set allow_unprovable to accept");
  // The same rule for the code as it will be: a revert would have to scan it.
  for (std::size_t k = 0; k < sites.size(); ++k)
    if (sites[k].to_indirect_jump)
      return site_error(ErrorCode::kUnprovable, sites[k].index, sites[k].address,
                        "the new code has an indirect jump at " + at(sites[k].to_indirect_jump) +
                            " among several instructions, whose targets cannot be checked (undoing it would be "
                            "refused); set allow_unprovable to accept");
  if (!complete)
    return site_error(ErrorCode::kUnprovable, front.index, front.address,
                      "the branch scan of [" + at(box.start) + ", " + at(box.end) +
                          ") stopped at undecodable bytes; set allow_unprovable to accept");
  return {};
}

}  // namespace

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
        return fail(
            ErrorCode::kUnprovable,
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
  const auto by_box = [&](std::uint32_t a, std::uint32_t b) {
    return batch.sites[a].container < batch.sites[b].container;
  };
  if (!std::is_sorted(by_container.begin(), by_container.end(), by_box))  // Usually sorted already.
    std::stable_sort(by_container.begin(), by_container.end(), by_box);
  batch.instructions.reserve(by_container.size());
  std::vector<disasm::Instruction> decoded;
  std::vector<disasm::PatchRange> ranges;
  for (std::size_t lo = 0; lo < by_container.size();) {
    const std::uint32_t g = batch.sites[by_container[lo]].container;
    std::size_t hi = lo;
    while (hi < by_container.size() && batch.sites[by_container[hi]].container == g) ++hi;
    PUNCH_TRY(check_container(batch, g, std::span(by_container).subspan(lo, hi - lo), Known{known.decodes, direction},
                              known.memo, decoded, ranges, options, room));
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
