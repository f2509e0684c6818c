// The object-wide branch index: what its first use costs for libc (one sweep
// of all its code), what every later check costs, and the per-function branch
// scan a hook already did, for comparison.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include <punch/disasm/branch_scan.hpp>
#include <punch/disasm/branch_sweep.hpp>
#include <punch/disasm/validate.hpp>
#include <punch/runtime/function_bounds.hpp>

#include "branch_index.hpp"

namespace {

namespace detail = punch::patcher::detail;

// A range where a hook of puts would steal bytes: inside libc, no branch lands there.
std::uintptr_t puts_entry() { return reinterpret_cast<std::uintptr_t>(&::puts); }

// Sweep libc's code and build its index from nothing, as the first hook in libc does.
void BM_BranchIndex_build_libc(benchmark::State& state) {
  for (auto _ : state) {
    detail::forget_branch_indexes();
    auto found = detail::find_branches_into(puts_entry(), puts_entry() + 5);
    if (!found) state.SkipWithError(found.error().describe().c_str());
    benchmark::DoNotOptimize(found);
  }
  const auto stats = detail::branch_index_stats();
  state.counters["branches"] = static_cast<double>(stats.branches);
  state.counters["code_bytes"] = static_cast<double>(stats.bytes);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * stats.bytes));
}
BENCHMARK(BM_BranchIndex_build_libc)->Name("BM_BranchIndex/build_libc")->Unit(benchmark::kMillisecond);

// Every later check in libc: find the object (dl_iterate_phdr), then a binary search.
void BM_BranchIndex_query_libc(benchmark::State& state) {
  (void)detail::find_branches_into(puts_entry(), puts_entry() + 5);  // Built once, outside the timing.
  for (auto _ : state) {
    auto found = detail::find_branches_into(puts_entry(), puts_entry() + 5);
    benchmark::DoNotOptimize(found);
  }
}
BENCHMARK(BM_BranchIndex_query_libc)->Name("BM_BranchIndex/query_libc");

// The per-function branch scan the hook planner already runs (puts, from its symbol).
void BM_BranchIndex_function_scan_puts(benchmark::State& state) {
  auto extent = punch::runtime::function_containing(puts_entry());
  if (!extent) {
    state.SkipWithError(extent.error().describe().c_str());
    return;
  }
  std::vector<std::uint8_t> bytes(extent->end - extent->start);
  std::memcpy(bytes.data(), reinterpret_cast<const void*>(extent->start), bytes.size());
  const punch::disasm::CodeSpan code{extent->start, bytes};
  for (auto _ : state) {
    auto scan = punch::disasm::scan_branches(code, extent->start + 4, extent->start + 9);
    benchmark::DoNotOptimize(scan);
  }
}
BENCHMARK(BM_BranchIndex_function_scan_puts)->Name("BM_BranchIndex/function_scan_puts");

}  // namespace
