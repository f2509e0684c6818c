#include "write_policy.hpp"

#include <algorithm>
#include <iterator>
#include <utility>

#include <punch/runtime/code_heap.hpp>

#include "site_messages.hpp"

namespace punch::patcher::live {

std::vector<runtime::CodeRange> heap_blocks(std::span<const std::uintptr_t> addresses) {
  auto heap = runtime::CodeHeap::global();
  if (!heap) return std::vector<runtime::CodeRange>(addresses.size());
  return (*heap)->allocations_holding(addresses);
}

Result<const runtime::Mapping*> MappingCache::holding(std::uintptr_t address) {
  auto it = std::upper_bound(known_.begin(), known_.end(), address,
                             [](std::uintptr_t a, const runtime::Mapping& m) { return a < m.start; });
  if (it != known_.begin() && std::prev(it)->contains(address)) return &*std::prev(it);
  auto found = runtime::query_mapping(address);
  if (!found) return tl::unexpected(std::move(found).error());
  return &*known_.insert(it, std::move(*found));
}

Result<bool> check_policy(MappingCache& maps, const Site& site, std::size_t index, const TransactionOptions& options) {
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

}  // namespace punch::patcher::live
