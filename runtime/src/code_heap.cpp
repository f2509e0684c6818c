#include <punch/runtime/code_heap.hpp>

#include <algorithm>
#include <atomic>
#include <map>

#include <punch/runtime/sync.hpp>

#include <punch/runtime/fork_safe_mutex.hpp>
#include "code_events.hpp"
#include "live_allocations.hpp"
#include "placement.hpp"

namespace punch::runtime {
namespace {

constexpr std::size_t kGranule = 16;  // Allocation sizes are rounded up to this.

bool add_overflows(std::size_t a, std::size_t b) { return a > SIZE_MAX - b; }

std::uintptr_t align_up(std::uintptr_t v, std::size_t align) { return (v + align - 1) & ~(std::uintptr_t{align} - 1); }

// Checks a request and lays out its blocks back to back: each block's offset
// from the first goes to `offsets` (each block owns the padding after it);
// returns the total size.
Result<std::size_t> lay_out(std::span<const std::size_t> sizes, std::size_t align, AddressWindow window,
                            std::vector<std::size_t>& offsets) {
  const std::size_t page = detail::page_size();
  if (align == 0 || (align & (align - 1)) != 0 || align > page)
    return fail(ErrorCode::kInvalidArgument,
                "code heap: alignment " + std::to_string(align) + " is not a power of two of at most a page");
  if (sizes.empty()) return fail(ErrorCode::kInvalidArgument, "code heap: no sizes to allocate");
  if (window.empty())
    return fail(ErrorCode::kInvalidArgument,
                "code heap: address window [" + at(window.lo) + ", " + at(window.hi) + ") is empty");
  std::size_t total = 0;
  for (std::size_t size : sizes) {
    if (size == 0 || add_overflows(size, kGranule) || add_overflows(align_up(total, align), size + kGranule) ||
        align_up(total, align) + size > SIZE_MAX - 2 * page)
      return fail(ErrorCode::kInvalidArgument, "code heap: bad allocation size " + std::to_string(size));
    total = align_up(total, align);
    offsets.push_back(total);
    total += align_up(size, kGranule);
  }
  return total;
}

// A free block. One freed since the heap's last sync is dirty: a thread may
// still hold stale instructions there, so it is synced before reuse. The
// block keeps the sync count at the time it was freed (0: never used), so a
// sync makes every block freed before it clean without visiting any.
struct FreeBlock {
  std::size_t size;
  std::uint64_t freed_at_sync;
};

struct Arena {
  CodeRegion region;
  std::map<std::uintptr_t, FreeBlock> free;  // By start address.
  // No free block is larger (an upper bound, made exact by a scan that fails):
  // a request for more skips the arena without walking its free blocks, which
  // cost most of an allocation once arenas hold thousands of small holes.
  std::size_t largest_free = 0;

  bool contains(std::uintptr_t a) const { return a >= region.address && a - region.address < region.size; }
};

}  // namespace

struct CodeHeap::State {
  State(CodeWriter& w, std::size_t a) : writer(w), arena_size(a) {}
  CodeWriter& writer;
  std::size_t arena_size;
  mutable ForkSafeMutex mutex{LockRank::kHeap};
  std::vector<Arena> arenas;
  detail::LiveAllocations live;
  std::uint64_t syncs = 1;  // Syncs done for reused space, plus one: fresh blocks (0) are clean.

  bool dirty(const FreeBlock& block) const { return block.freed_at_sync >= syncs; }

  // A place for `total` bytes aligned to `align` within `window`, in an existing free block.
  bool find(std::size_t total, std::size_t align, AddressWindow window, Arena*& arena, std::uintptr_t& where) {
    for (Arena& a : arenas) {
      if (a.largest_free < total) continue;
      std::size_t largest = 0;
      for (auto& [start, block] : a.free) {
        largest = std::max(largest, block.size);
        std::uintptr_t lo = std::max<std::uintptr_t>(start, window.lo);
        if (add_overflows(lo, align)) continue;
        std::uintptr_t candidate = align_up(lo, align);
        std::uintptr_t end = start + block.size;
        if (candidate >= end || end - candidate < total || !window.contains(candidate, total)) continue;
        arena = &a;
        where = candidate;
        return true;
      }
      a.largest_free = largest;
    }
    return false;
  }

  // find(), else a new arena within `window` (kept even if the caller then
  // takes nothing from it, like every arena). Call under `mutex`.
  Status find_or_map(std::size_t total, std::size_t align, AddressWindow window, Arena*& arena, std::uintptr_t& where) {
    if (find(total, align, window, arena, where)) return {};
    auto region = writer.map_code(std::max(arena_size, total), window);
    // A narrow window (code that must reach data near the edge of rel32) may
    // have no room for a whole arena: then map just what this request needs.
    if (!region && total < arena_size) region = writer.map_code(align_up(total, detail::page_size()), window);
    if (!region) return tl::unexpected(std::move(region).error());
    Arena fresh{*region, {}, region->size};
    fresh.free.emplace(region->address, FreeBlock{region->size, 0});
    arenas.push_back(std::move(fresh));
    arena = &arenas.back();
    where = region->address;  // Page aligned, so aligned to any `align` allowed.
    return {};
  }

  // Takes [where, where+total) out of the free block holding it; true when that block was dirty.
  bool carve(Arena& arena, std::uintptr_t where, std::size_t total) {
    auto it = std::prev(arena.free.upper_bound(where));
    const std::uintptr_t start = it->first;
    const FreeBlock block = it->second;
    arena.free.erase(it);
    if (where > start) arena.free.emplace(start, FreeBlock{where - start, block.freed_at_sync});
    if (where + total < start + block.size)
      arena.free.emplace(where + total, FreeBlock{start + block.size - (where + total), block.freed_at_sync});
    return dirty(block);
  }

  // Returns [address, address+size) to its arena (freed now: dirty), merging with free neighbours.
  void give_back(Arena& arena, std::uintptr_t address, std::size_t size) {
    std::uint64_t freed_at_sync = syncs;  // Dirty until the next sync; a merged block is as dirty as either part.
    auto next = arena.free.find(address + size);
    if (next != arena.free.end()) {
      size += next->second.size;
      arena.free.erase(next);
    }
    auto after = arena.free.upper_bound(address);
    if (after != arena.free.begin()) {
      auto prev = std::prev(after);
      if (prev->first + prev->second.size == address) {
        prev->second.size += size;
        prev->second.freed_at_sync = freed_at_sync;
        arena.largest_free = std::max(arena.largest_free, prev->second.size);
        return;
      }
    }
    arena.free.emplace(address, FreeBlock{size, freed_at_sync});
    arena.largest_free = std::max(arena.largest_free, size);
  }

  Arena* arena_of(std::uintptr_t address) {
    for (Arena& a : arenas)
      if (a.contains(address)) return &a;
    return nullptr;
  }
};

CodeHeap::CodeHeap(CodeWriter& writer, std::size_t arena_size)
    : state_(std::make_unique<State>(writer, std::max(arena_size, detail::page_size()))) {}

CodeHeap::~CodeHeap() {
  for (const Arena& a : state_->arenas) {
    code_events::code_released(a.region.address, a.region.size);  // No tool names unmapped memory.
    (void)state_->writer.unmap_code(a.region);
  }
}

namespace {

// Built on first use under a fork-safe lock built while the program loads,
// not as a function-local static, for the reason CodeWriter::global gives.
ForkSafeMutex& global_heap_mutex() {
  static auto* m = new ForkSafeMutex(LockRank::kHeap);
  return *m;
}
[[maybe_unused]] const bool g_global_heap_mutex_built = (static_cast<void>(global_heap_mutex()), true);
std::atomic<Result<CodeHeap*>*> g_global_heap{nullptr};

}  // namespace

Result<CodeHeap*> CodeHeap::global() {
  auto* heap = g_global_heap.load(std::memory_order_acquire);
  if (!heap) {
    std::lock_guard guard(global_heap_mutex());
    heap = g_global_heap.load(std::memory_order_relaxed);
    if (!heap) {
      auto writer = CodeWriter::global();
      // Leaked on purpose: code may run until exit.
      heap = writer ? new Result<CodeHeap*>(new CodeHeap(**writer)) : new Result<CodeHeap*>(fail(writer.error()));
      g_global_heap.store(heap, std::memory_order_release);
    }
  }
  return *heap;
}

Result<std::uintptr_t> CodeHeap::allocate(std::size_t size, std::size_t align, AddressWindow window) {
  auto run = allocate_run(std::span(&size, 1), align, window);
  if (!run) return tl::unexpected(std::move(run).error());
  return run->front();
}

Result<std::vector<std::uintptr_t>> CodeHeap::allocate_run(std::span<const std::size_t> sizes, std::size_t align,
                                                           AddressWindow window) {
  std::vector<std::size_t> offsets;
  auto laid_out = lay_out(sizes, align, window, offsets);
  if (!laid_out) return tl::unexpected(std::move(laid_out).error());
  const std::size_t total = *laid_out;

  std::lock_guard guard(state_->mutex);
  Arena* arena = nullptr;
  std::uintptr_t where = 0;
  if (Status room = state_->find_or_map(total, align, window, arena, where); !room) return tl::unexpected(room.error());
  if (state_->carve(*arena, where, total)) {
    // Reused space: no thread may still hold instructions it fetched there before.
    if (Status synced = sync_all_threads(); !synced) {
      state_->give_back(*arena, where, total);
      return tl::unexpected(std::move(synced).error());
    }
    ++state_->syncs;  // Every block freed before this sync is clean now.
  }
  std::vector<std::uintptr_t> out;
  out.reserve(offsets.size());
  for (std::size_t offset : offsets) out.push_back(where + offset);
  state_->live.add_run(out, where + total);
  return out;
}

Status CodeHeap::reserve_room(std::size_t size, std::size_t align, AddressWindow window) {
  std::vector<std::size_t> offsets;
  auto total = lay_out(std::span(&size, 1), align, window, offsets);
  if (!total) return tl::unexpected(std::move(total).error());
  std::lock_guard guard(state_->mutex);
  Arena* arena = nullptr;
  std::uintptr_t where = 0;
  return state_->find_or_map(*total, align, window, arena, where);
}

Status CodeHeap::has_room(std::size_t size, std::size_t align, AddressWindow window) {
  std::vector<std::size_t> offsets;
  auto total = lay_out(std::span(&size, 1), align, window, offsets);
  if (!total) return tl::unexpected(std::move(total).error());
  {
    std::lock_guard guard(state_->mutex);
    Arena* arena = nullptr;
    std::uintptr_t where = 0;
    if (state_->find(*total, align, window, arena, where)) return {};
  }
  // find_or_map's last resort: a mapping of just the request's size.
  return detail::has_gap_in_window(align_up(*total, detail::page_size()), window);
}

Status CodeHeap::free(std::uintptr_t address) { return free_batch(std::span(&address, 1)); }

Status CodeHeap::free_batch(std::span<const std::uintptr_t> addresses) {
  std::vector<std::uintptr_t> sorted(addresses.begin(), addresses.end());
  if (!std::is_sorted(sorted.begin(), sorted.end())) std::sort(sorted.begin(), sorted.end());
  std::lock_guard guard(state_->mutex);
  // Check every address before touching anything.
  for (std::size_t i = 1; i < sorted.size(); ++i)
    if (sorted[i - 1] == sorted[i]) return fail(ErrorCode::kInvalidArgument, sorted[i], "listed twice in one free");
  std::vector<CodeRange> blocks;
  blocks.reserve(sorted.size());
  if (std::size_t bad = state_->live.blocks_starting_at(sorted, blocks); bad < sorted.size()) {
    const std::uintptr_t address = sorted[bad];
    Arena* arena = state_->arena_of(address);
    bool in_free_block = false;
    if (arena) {
      auto after = arena->free.upper_bound(address);
      in_free_block = after != arena->free.begin() && address - std::prev(after)->first < std::prev(after)->second.size;
    }
    return fail(ErrorCode::kNotOwned, at(address) + (in_free_block ? ": double free (this space is already free)"
                                                                   : ": not an allocation this code heap handed out"));
  }
  // Contiguous runs of allocations: one int3 write and one free block each.
  struct Run {
    std::uintptr_t start, end;
    std::vector<std::uint8_t> old_bytes;  // To put back if a later run cannot be written.
  };
  std::vector<Run> runs;
  for (const CodeRange& block : blocks) {
    if (runs.empty() || runs.back().end != block.begin) runs.push_back(Run{block.begin, block.begin, {}});
    runs.back().end = block.end;
  }
  // Traps, not stale code, for anyone who still jumps here by mistake.
  std::vector<std::uint8_t> traps;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    Run& run = runs[i];
    const auto* current = reinterpret_cast<const std::uint8_t*>(run.start);
    if (i + 1 < runs.size()) run.old_bytes.assign(current, current + (run.end - run.start));  // The last needs no undo.
    traps.assign(run.end - run.start, 0xCC);
    if (Status ok = state_->writer.write(run.start, traps); !ok) {
      for (std::size_t k = 0; k < i; ++k) (void)state_->writer.write(runs[k].start, runs[k].old_bytes);
      return ok;
    }
  }
  // Every tool forgets the code before the space can be handed out again.
  std::vector<code_events::ReleasedCode> released;
  released.reserve(blocks.size());
  for (const CodeRange& block : blocks) released.push_back({block.begin, block.end - block.begin});
  code_events::code_released(released);
  state_->live.remove(sorted);
  for (const Run& run : runs) state_->give_back(*state_->arena_of(run.start), run.start, run.end - run.start);
  return {};
}

bool CodeHeap::owns(std::uintptr_t address, std::size_t size) const {
  std::lock_guard guard(state_->mutex);
  const CodeRange block = state_->live.holding(address);
  return block.contains(address) && size <= block.end - address;
}

Result<CodeRange> CodeHeap::allocation_holding(std::uintptr_t address) const {
  std::lock_guard guard(state_->mutex);
  const CodeRange block = state_->live.holding(address);
  if (block.contains(address)) return block;
  return fail(ErrorCode::kNotOwned, address, "no live allocation of this code heap holds it");
}

std::vector<CodeRange> CodeHeap::allocations_holding(std::span<const std::uintptr_t> addresses) const {
  std::vector<CodeRange> found;
  found.reserve(addresses.size());
  std::lock_guard guard(state_->mutex);
  CodeRange last;  // An address in the same allocation as the one before it costs no lookup.
  for (std::uintptr_t a : addresses) {
    if (!last.contains(a)) last = state_->live.holding(a);
    found.push_back(last);
  }
  return found;
}

Result<std::size_t> CodeHeap::allocation_size(std::uintptr_t address) const {
  std::lock_guard guard(state_->mutex);
  const CodeRange block = state_->live.holding(address);
  if (block.begin != address || block.end == 0)
    return fail(ErrorCode::kNotOwned, address, "not a live allocation of this code heap");
  return block.end - block.begin;
}

HeapStats CodeHeap::stats() const {
  std::lock_guard guard(state_->mutex);
  HeapStats s;
  for (const Arena& a : state_->arenas) {
    s.mapped += a.region.size;
    s.fragments += a.free.size();
  }
  s.used = state_->live.bytes();
  s.free = s.mapped - s.used;
  s.arenas = state_->arenas.size();
  s.allocations = state_->live.count();
  return s;
}

CodeWriter& CodeHeap::writer() const noexcept { return state_->writer; }

}  // namespace punch::runtime
