// Reclaiming out-of-line copies. No return address ever points into a copy
// (a final call pushes the site's end: out_of_line.cpp), so a thread's rip is
// the only way it can be inside one, which is what the reclamation
// rendezvous checks.
#include "copy_reclamation.hpp"

#include <algorithm>
#include <thread>
#include <vector>

#include <punch/runtime/code_heap.hpp>
#include <punch/runtime/sync.hpp>
#include <punch/runtime/threads.hpp>

namespace punch::patcher::live {

void drain_copies(const Generation& generation, std::chrono::milliseconds timeout) {
  std::vector<runtime::CodeRange> copies;
  for (const CopyBlock& b : generation.blocks) copies.push_back({b.address, b.address + b.size});
  if (copies.empty()) return;
  // A thread leaves a copy within a few instructions once it runs, so the
  // first look usually finds them empty; otherwise look again after a pause
  // that grows (each look signals every thread: back to back they would
  // starve the very threads being waited for).
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::microseconds(100);
  for (;;) {
    auto in_use = runtime::ranges_in_use(copies, timeout);
    if (!in_use || std::none_of(in_use->begin(), in_use->end(), [](bool b) { return b; })) return;
    if (std::chrono::steady_clock::now() + pause >= deadline) return;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(10000));
  }
}

void free_copies(Generation& generation) {
  auto heap = runtime::CodeHeap::global();
  if (heap)
    for (const CopyBlock& b : generation.blocks) (void)(*heap)->free(b.address);
  generation.blocks.clear();
}

bool reclaim_due() {
  constexpr std::size_t kMaxRetainedBytes = std::size_t{1} << 20;
  // Published generations are draining ones, but for at most the one in
  // flight and any kept after a failed rollback.
  const PublishedTotals published = published_totals();
  return published.generations >= kMaxGenerations * 3 / 4 || published.copy_bytes >= kMaxRetainedBytes;
}

namespace {

// Generations unpublished early whose copies a thread entered meanwhile
// (after they were found unentered): they wait for the next round. Under the live lock.
std::vector<Generation*>& orphans() {
  static auto* list = new std::vector<Generation*>;  // Never destroyed: commits may run during static destruction.
  return *list;
}

// No thread was ever sent into its copies (trap redirects count on the
// generation), and no thread can be moved into one (no fix-up copies): once
// unpublished, nothing can enter them either.
bool copies_unentered(const Generation& g) {
  if (g.copies_entered.load(std::memory_order_seq_cst) != 0) return false;
  return std::none_of(g.sites.begin(), g.sites.end(), [](const FlightSite& s) { return s.fixup_copy != 0; });
}

}  // namespace

Result<std::size_t> reclaim_generations(std::chrono::milliseconds timeout) {
  std::vector<Generation*> candidates;
  std::vector<runtime::CodeRange> ranges;
  std::vector<std::size_t> owner;  // Per range: its generation in `candidates`.
  auto add_candidate = [&](Generation* g) {
    for (const CopyBlock& b : g->blocks) {
      ranges.push_back({b.address, b.address + b.size});
      owner.push_back(candidates.size());
    }
    candidates.push_back(g);
  };
  for (Generation* g : published_generations()) {
    if (g->state.load(std::memory_order_acquire) != GenerationState::kDraining) continue;
    // No thread inside its copies (or no copies at all): its sites are
    // remembered for the trap handler, and it goes now, with no sync and no
    // rendezvous (see remember_retired_sites). Only a full table, or copies
    // a thread entered, need the round below.
    if (copies_unentered(*g) && remember_retired_sites(*g)) {
      unpublish(g);  // After this no handler reads it, so no thread can still be sent into its copies.
      if (g->copies_entered.load(std::memory_order_seq_cst) != 0) {
        orphans().push_back(g);  // Entered between the two looks: freed after a round.
        continue;
      }
      free_copies(*g);  // The heap fills freed space with int3 and syncs before handing it out again.
      delete g;
      g_counters.generations_retired_early.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    add_candidate(g);
  }
  std::vector<Generation*> waiting = std::move(orphans());
  orphans().clear();
  for (Generation* g : waiting) add_candidate(g);
  if (candidates.empty()) return 0;
  // Orphans not freed by this call wait for the next one.
  auto keep_orphans = [&](const std::vector<bool>& freed) {
    for (std::size_t i = 0; i < candidates.size(); ++i)
      if (!freed[i] && std::find(waiting.begin(), waiting.end(), candidates[i]) != waiting.end())
        orphans().push_back(candidates[i]);
  };

  // A run ends without a last sync (see live_protocol.cpp): a core may still
  // see a stale trap byte of a draining generation, whose handler must then
  // find it. This sync ends that: afterwards no thread meets those bytes.
  if (auto synced = runtime::sync_all_threads(timeout); !synced) {
    keep_orphans(std::vector<bool>(candidates.size(), false));
    return tl::unexpected(std::move(synced).error());
  }

  // Then one rendezvous reads every thread's rip (an unanswered thread counts
  // as inside unless proven blocked in a syscall outside). An answer also
  // proves the thread is not between a trap and its handler: the trap handler
  // blocks every signal while it runs, and a trap's signal is delivered before
  // the rendezvous signal. The empty range stands for that proof alone: it is
  // in use only when some thread could not be placed at all.
  ranges.push_back({0, 0});
  auto in_use = runtime::ranges_in_use(ranges, timeout);
  if (!in_use || in_use->back()) {  // Failed, or some thread may still be about to run a trap handler.
    keep_orphans(std::vector<bool>(candidates.size(), false));
    if (!in_use) return tl::unexpected(std::move(in_use).error());
    return candidates.size();
  }
  // Every thread answered: none is between a trap and its handler, so the
  // sites remembered before this round are needed no more.
  forget_retired_sites();
  std::vector<bool> busy(candidates.size(), false);
  for (std::size_t r = 0; r + 1 < ranges.size(); ++r)
    if ((*in_use)[r]) busy[owner[r]] = true;
  g_counters.reclaim_rounds.fetch_add(1, std::memory_order_relaxed);
  std::size_t retained = 0;
  std::vector<bool> freed(candidates.size(), false);
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    if (busy[i]) {
      ++retained;
      continue;
    }
    Generation* g = candidates[i];
    unpublish(g);  // An orphan is no longer published: then this only waits for readers.
    // The heap fills freed space with int3 and syncs before handing it out again.
    free_copies(*g);
    delete g;
    freed[i] = true;
    g_counters.copies_freed.fetch_add(1, std::memory_order_relaxed);
  }
  keep_orphans(freed);
  return retained;
}

}  // namespace punch::patcher::live
