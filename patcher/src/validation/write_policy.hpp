// The write policy: which mappings a site may lie in (executable and private
// unless the caller opts in to data; never MAP_SHARED), looked up once per
// mapping and never for sites in the heap's own allocations.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include <punch/patcher/transaction.hpp>
#include <punch/result.hpp>
#include <punch/runtime/code_range.hpp>
#include <punch/runtime/maps.hpp>

namespace punch::patcher::live {

// The live allocation of the global heap that holds each of `addresses`
// (empty ranges where none does), looked up under one heap lock for the batch.
std::vector<runtime::CodeRange> heap_blocks(std::span<const std::uintptr_t> addresses);

// The mappings sites lie in, each queried once per validation (sites of one
// arena or one library share a mapping).
class MappingCache {
 public:
  // The mapping holding `address`, or kNotMapped naming it.
  Result<const runtime::Mapping*> holding(std::uintptr_t address);

 private:
  std::vector<runtime::Mapping> known_;  // Sorted by start, disjoint.
};

// Write policy: only executable mappings unless opted in; never MAP_SHARED
// (pwrite fails there, and other processes would see the change). Sites in
// a live heap allocation are not looked up: the heap's arenas are R+X code
// by construction, never unmapped (dual-map arenas are memfd shared mappings
// by design), and a batch of them then costs no PROCMAP_QUERY at all.
Result<bool> check_policy(MappingCache& maps, const Site& site, std::size_t index, const TransactionOptions& options);

}  // namespace punch::patcher::live
