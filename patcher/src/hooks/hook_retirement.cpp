// Retired hook code: trampolines, link stubs, relays and generated detours a
// hook no longer uses, freed only when no thread is inside them or inside a
// detour that may still call them (runtime::ranges_in_use), or counted in
// a generated detour's call.
#include <atomic>
#include <mutex>
#include <utility>

#include <punch/runtime/code_heap.hpp>
#include <punch/runtime/threads.hpp>

#include "hook_chain.hpp"

namespace punch::patcher::detail {

void retire(HookRegistry& r, const CodeBlock& b, const std::vector<runtime::CodeRange>& callers, bool keep,
            const std::vector<InFlight>& in_flight) {
  r.retired.push_back({b, keep, callers, in_flight});
}

void retire_jump_point(HookRegistry& r, JumpPoint& point, const std::vector<runtime::CodeRange>& callers,
                       const std::vector<InFlight>& in_flight) {
  for (auto& [to, relay] : point.relays) retire(r, relay, callers, false, in_flight);
  point.relays.clear();
}

void retire_chain(HookRegistry& r, std::map<std::uintptr_t, std::unique_ptr<Chain>>::iterator it) {
  Chain& chain = *it->second;
  retire(r, chain.trampoline, chain.detour_extents, chain.trampoline_holds_returns, chain.in_flight);
  if (chain.head) retire(r, *chain.head, chain.detour_extents, false, chain.in_flight);
  retire_jump_point(r, chain.entry_jump, chain.detour_extents, chain.in_flight);
  retire_jump_point(r, chain.head_jump, chain.detour_extents, chain.in_flight);
  r.chains.erase(it);
}

void abandon_chain(HookRegistry& r, Chain& chain) {
  retire(r, chain.trampoline, {}, true);
  if (chain.head) retire(r, *chain.head, {}, true);
  for (auto* point : {&chain.entry_jump, &chain.head_jump}) {
    for (auto& [to, relay] : point->relays) retire(r, relay, {}, true);
    point->relays.clear();
  }
}

Result<std::size_t> registry_release_retired(std::chrono::milliseconds timeout) {
  HookRegistry& r = hook_registry();
  std::lock_guard lock(r.mutex);
  for (auto it = r.chains.begin(); it != r.chains.end();)
    it = it->second->hooks.empty() ? (retire_chain(r, it++), it) : std::next(it);
  if (r.retired.empty()) return std::size_t{0};

  // The entry jumps leading here are gone and synced: only a thread already
  // inside a block, or inside a detour that may still call it, can reach it.
  std::vector<runtime::CodeRange> ranges;
  std::vector<std::size_t> owner;  // ranges[k] decides about r.retired[owner[k]].
  for (std::size_t i = 0; i < r.retired.size(); ++i) {
    if (r.retired[i].keep) continue;
    const CodeBlock& b = r.retired[i].block;
    ranges.push_back({b.address, b.address + b.size});
    owner.push_back(i);
    for (const runtime::CodeRange& caller : r.retired[i].callers) {
      ranges.push_back(caller);
      owner.push_back(i);
    }
  }
  // Counts before the rendezvous: a thread that leaves a generated detour's
  // call after its count was read is in that detour or past it, where the rendezvous sees it.
  std::vector<bool> busy(r.retired.size(), false);
  for (std::size_t i = 0; i < r.retired.size(); ++i)
    for (const InFlight& count : r.retired[i].in_flight)
      if (count->load(std::memory_order_acquire) != 0) busy[i] = true;
  if (!ranges.empty()) {
    auto in_use = runtime::ranges_in_use(ranges, timeout);
    if (!in_use) return tl::unexpected<Error>(std::move(in_use).error());
    for (std::size_t k = 0; k < ranges.size(); ++k)
      if ((*in_use)[k]) busy[owner[k]] = true;
  }
  auto h = runtime::CodeHeap::global();
  if (!h) return tl::unexpected<Error>(std::move(h).error());
  std::size_t freed = 0;
  std::vector<Retired> kept;
  for (std::size_t i = 0; i < r.retired.size(); ++i) {
    if (r.retired[i].keep || busy[i] || !(*h)->free(r.retired[i].block.address))
      kept.push_back(std::move(r.retired[i]));
    else
      ++freed;
  }
  r.retired = std::move(kept);
  return freed;
}

}  // namespace punch::patcher::detail
