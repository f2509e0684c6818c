// The lock-free table of generations: fixed slots of atomic pointers plus a
// reader count. Handlers count themselves in before loading a slot; unpublish
// empties the slot, then waits for the count to drain (sequentially consistent
// order makes a reader that comes in later see the empty slot).
#include "flight_table.hpp"

#include <sched.h>

#include <algorithm>

#include <punch/runtime/raw_syscall.hpp>

namespace punch::patcher::live {
namespace {

std::atomic<Generation*> g_slots[kMaxGenerations];
std::atomic<std::uint64_t> g_readers{0};
// Changed by publish and unpublish only, which run under the live lock.
std::atomic<std::size_t> g_published{0};
std::atomic<std::size_t> g_published_copy_bytes{0};

// Remembered sites: address << 1 | (trap is hlt). Entries [0, count) are
// valid; written only under the live lock, read by trap handlers.
std::atomic<std::uintptr_t> g_retired_sites[kMaxRetiredSites];
std::atomic<std::size_t> g_retired_count{0};

std::uintptr_t retired_entry(std::uintptr_t site, TrapInstruction trap) noexcept {
  return site << 1 | (trap == TrapInstruction::kHlt ? 1 : 0);
}

static_assert(std::atomic<Generation*>::is_always_lock_free);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

}  // namespace

LiveCounters g_counters;

LiveStats LiveCounters::snapshot() const noexcept {
  LiveStats s;
#define PUNCH_LIVE_COUNTER_READ(name) s.name = name.load(std::memory_order_relaxed);
  PUNCH_LIVE_STATS(PUNCH_LIVE_COUNTER_READ)
#undef PUNCH_LIVE_COUNTER_READ
  return s;
}

const FlightSite* Generation::site_at(std::uintptr_t address) const noexcept {
  auto it = std::lower_bound(sites.begin(), sites.end(), address,
                             [](const FlightSite& s, std::uintptr_t a) { return s.address < a; });
  return it != sites.end() && it->address == address ? &*it : nullptr;
}

const FlightSite* Generation::site_strictly_holding(std::uintptr_t rip) const noexcept {
  auto it = std::upper_bound(sites.begin(), sites.end(), rip,
                             [](std::uintptr_t a, const FlightSite& s) { return a < s.address; });
  if (it == sites.begin()) return nullptr;
  --it;
  return rip > it->address && rip < it->end() ? &*it : nullptr;
}

std::size_t Generation::copy_bytes() const noexcept {
  std::size_t n = 0;
  for (const CopyBlock& b : blocks) n += b.size;
  return n;
}

bool Generation::copies_hold(std::uintptr_t rip) const noexcept {
  for (const CopyBlock& b : blocks)
    if (rip >= b.address && rip - b.address < b.size) return true;
  return false;
}

void end_run(Generation& generation, GenerationState state) noexcept {
  generation.state.store(state, std::memory_order_seq_cst);
  // Read after the store: a waiter that counted itself in before it could see
  // the store is seen here (see wait_for_run in trap_handler.cpp).
  if (generation.waiters.load(std::memory_order_seq_cst) != 0) runtime::futex_wake_all(generation.state);
}

bool publish(Generation* generation) noexcept {
  for (std::size_t i = 0; i < kMaxGenerations; ++i) {
    if (g_slots[i].load(std::memory_order_relaxed)) continue;  // Taken: no need for a locked instruction.
    Generation* empty = nullptr;
    generation->slot = i;
    if (g_slots[i].compare_exchange_strong(empty, generation, std::memory_order_seq_cst)) {
      g_published.fetch_add(1, std::memory_order_relaxed);
      g_published_copy_bytes.fetch_add(generation->copy_bytes(), std::memory_order_relaxed);
      return true;
    }
  }
  return false;
}

void unpublish(Generation* generation) noexcept {
  Generation* expected = generation;
  if (g_slots[generation->slot].compare_exchange_strong(expected, nullptr, std::memory_order_seq_cst)) {
    g_published.fetch_sub(1, std::memory_order_relaxed);
    g_published_copy_bytes.fetch_sub(generation->copy_bytes(), std::memory_order_relaxed);
  }
  // Handlers never block, so this wait is short.
  while (g_readers.load(std::memory_order_seq_cst) != 0) sched_yield();
}

PublishedTotals published_totals() noexcept {
  return {g_published.load(std::memory_order_relaxed), g_published_copy_bytes.load(std::memory_order_relaxed)};
}

std::vector<Generation*> published_generations() {
  std::vector<Generation*> out;
  for (auto& slot : g_slots)
    if (Generation* g = slot.load(std::memory_order_acquire)) out.push_back(g);
  return out;
}

bool remember_retired_sites(const Generation& generation) noexcept {
  const std::size_t count = g_retired_count.load(std::memory_order_relaxed);
  if (generation.sites.size() > kMaxRetiredSites - count) return false;
  for (std::size_t i = 0; i < generation.sites.size(); ++i)
    g_retired_sites[count + i].store(retired_entry(generation.sites[i].address, generation.trap),
                                     std::memory_order_relaxed);
  // Published before the generation leaves its slot (unpublish is sequentially consistent).
  g_retired_count.store(count + generation.sites.size(), std::memory_order_seq_cst);
  return true;
}

bool is_retired_site(std::uintptr_t site, TrapInstruction trap) noexcept {
  const std::uintptr_t entry = retired_entry(site, trap);
  const std::size_t count = g_retired_count.load(std::memory_order_seq_cst);
  for (std::size_t i = 0; i < count; ++i)
    if (g_retired_sites[i].load(std::memory_order_relaxed) == entry) return true;
  return false;
}

void forget_retired_sites() noexcept { g_retired_count.store(0, std::memory_order_seq_cst); }

ReadGuard::ReadGuard() noexcept { g_readers.fetch_add(1, std::memory_order_seq_cst); }
ReadGuard::~ReadGuard() { g_readers.fetch_sub(1, std::memory_order_seq_cst); }
const Generation* ReadGuard::slot(std::size_t i) const noexcept { return g_slots[i].load(std::memory_order_seq_cst); }

}  // namespace punch::patcher::live
