// The code registry: sharded, copy-on-write sorted tables read without locks.
//
// Readers (find_code, possibly in a signal handler) take no lock and allocate
// nothing: they announce themselves in one of two reader counters, load the
// table of the address's shard, binary-search it and copy the entry out.
// Writers (register/unregister, serialized by one mutex) never change a
// published table: they build a new one, publish it with one atomic store,
// then retire the old table and any removed record once every reader that
// could still see them has left (epoch flip + wait for the old counter to
// drain, a minimal userspace RCU). So a release returns only when no reader
// holds the entry any more, and the memory can be reused.
//
// Shards keep a write cheap with many functions: the address space is cut
// into 64 KiB regions hashed onto kShards shards; a record is listed in the
// shard of every region it covers. Records never overlap, so in one shard the
// record holding an address is the last one starting at or before it.
#include <punch/runtime/code_registry.hpp>

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <new>
#include <string>

#include <punch/runtime/fork_safe_mutex.hpp>

#include "code_events.hpp"

namespace punch::runtime {
namespace {

struct Record {
  std::uintptr_t start;
  std::size_t size;
  CodeKind kind;
  std::string name;
  std::uintptr_t end() const noexcept { return start + size; }
};

struct Table {
  std::vector<const Record*> records;  // Sorted by start, never overlapping.
};

constexpr unsigned kRegionShift = 16;
constexpr std::size_t kShards = 1024;

std::array<std::atomic<const Table*>, kShards> g_shards{};  // Zero: empty.
std::atomic<std::uint64_t> g_epoch{0};
std::array<std::atomic<std::uint64_t>, 2> g_readers{};      // Readers inside, by epoch parity.

std::size_t shard_of_region(std::uintptr_t region) noexcept { return region % kShards; }
std::size_t shard_of(std::uintptr_t address) noexcept { return shard_of_region(address >> kRegionShift); }

// The shards a record is listed in: one per 64 KiB region it covers (at most kShards).
template <class F>
void for_each_shard(std::uintptr_t start, std::size_t size, F&& f) {
  const std::uintptr_t first = start >> kRegionShift;
  const std::uintptr_t last = (start + (size ? size - 1 : 0)) >> kRegionShift;
  const std::uintptr_t count = std::min<std::uintptr_t>(last - first + 1, kShards);
  for (std::uintptr_t i = 0; i < count; ++i) f(shard_of_region(first + i));
}

// A reader's stay: counted under the epoch it saw, so a writer knows when
// everyone who could see an old table has left.
class ReadSection {
 public:
  ReadSection() noexcept {
    for (;;) {
      parity_ = g_epoch.load() & 1;
      g_readers[parity_].fetch_add(1);
      if ((g_epoch.load() & 1) == parity_) return;
      g_readers[parity_].fetch_sub(1);  // A writer flipped meanwhile: count under the new epoch.
    }
  }
  ~ReadSection() { g_readers[parity_].fetch_sub(1); }
  ReadSection(const ReadSection&) = delete;
  ReadSection& operator=(const ReadSection&) = delete;

 private:
  std::uint64_t parity_;
};

// Waits until no reader can still hold a table or record unpublished before the call.
void wait_for_readers() noexcept {
  const std::uint64_t old_parity = g_epoch.fetch_add(1) & 1;
  while (g_readers[old_parity].load() != 0) sched_yield();
}

struct Writer {
  ForkSafeMutex mutex{LockRank::kCodeNames};
  Writer() {
    // A reader of another thread at fork() does not exist in the child: its count must not stay.
    pthread_atfork(nullptr, nullptr, [] {
      g_readers[0].store(0);
      g_readers[1].store(0);
    });
  }
};

// Built while the program loads, not on first use under a function-local
// static's guard (see CodeWriter::global); never destroyed, so code can be
// released during exit.
Writer& writer() {
  static Writer* w = new Writer;
  return *w;
}
[[maybe_unused]] const bool g_writer_built = (static_cast<void>(writer()), true);

const Record* find_in(const Table* table, std::uintptr_t address) noexcept {
  if (!table) return nullptr;
  auto it = std::upper_bound(table->records.begin(), table->records.end(), address,
                             [](std::uintptr_t a, const Record* r) { return a < r->start; });
  if (it == table->records.begin()) return nullptr;
  const Record* r = *(it - 1);
  return address - r->start < r->size ? r : nullptr;
}

void copy_out(const Record& r, CodeInfo& out) noexcept {
  out.start = r.start;
  out.size = r.size;
  out.kind = r.kind;
  const std::size_t n = std::min(r.name.size(), CodeInfo::kNameCapacity - 1);
  std::memcpy(out.name, r.name.data(), n);
  out.name[n] = '\0';
}

// Replaces, in every shard it touches, the records overlapping any of
// `removed_ranges` by nothing and adds `added`. Caller holds the writer lock.
// Returns the tables and records to free once readers have left.
struct Garbage {
  std::vector<const Table*> tables;
  std::vector<const Record*> records;
  ~Garbage() {
    for (const Table* t : tables) delete t;
    for (const Record* r : records) delete r;
  }
};

struct Range {
  std::uintptr_t start, size;
  bool overlaps(const Record& r) const noexcept { return r.start < start + size && start < r.end(); }
  bool holds_start(const Record& r) const noexcept { return r.start - start < size; }
};

// Applies one change under the writer lock: drop records matching `drop`, add `added`.
template <class Drop>
void update(std::span<const Range> touched, Drop&& drop, std::span<const Record* const> added, Garbage& garbage) {
  std::vector<std::size_t> shards;
  for (const Range& range : touched) for_each_shard(range.start, range.size, [&](std::size_t s) { shards.push_back(s); });
  std::sort(shards.begin(), shards.end());
  shards.erase(std::unique(shards.begin(), shards.end()), shards.end());
  for (std::size_t s : shards) {
    const Table* old = g_shards[s].load();
    auto* table = new Table;
    if (old) {
      table->records.reserve(old->records.size() + added.size());
      for (const Record* r : old->records) {
        if (!drop(*r)) {
          table->records.push_back(r);
        } else if (std::find(garbage.records.begin(), garbage.records.end(), r) == garbage.records.end()) {
          garbage.records.push_back(r);
        }
      }
    }
    for (const Record* r : added) {
      bool listed = false;
      for_each_shard(r->start, r->size, [&](std::size_t rs) { listed |= rs == s; });
      if (listed) table->records.push_back(r);
    }
    std::sort(table->records.begin(), table->records.end(),
              [](const Record* a, const Record* b) { return a->start < b->start; });
    if (table->records.empty()) {
      delete table;
      table = nullptr;
    }
    g_shards[s].store(table);
    if (old) garbage.tables.push_back(old);
  }
}

void registry_added(std::span<const code_events::AddedCode> batch) {
  try {
    std::vector<const Record*> added;
    std::vector<Range> ranges;
    added.reserve(batch.size());
    for (const auto& code : batch) {
      if (code.size == 0) continue;
      added.push_back(new Record{code.address, code.size, code.kind, std::string(code.name)});
      ranges.push_back({code.address, code.size});
    }
    Garbage garbage;
    {
      std::lock_guard lock(writer().mutex);
      // New code replaces whatever stale entry it overlaps (an owner that never released it).
      update(ranges, [&](const Record& r) {
        return std::any_of(ranges.begin(), ranges.end(), [&](const Range& x) { return x.overlaps(r); });
      }, added, garbage);
      wait_for_readers();
    }
  } catch (const std::bad_alloc&) {
    // Best effort: without memory the code stays unnamed.
  }
}

void registry_released(std::span<const code_events::ReleasedCode> batch) {
  try {
    std::vector<Range> ranges;
    for (const auto& code : batch) ranges.push_back({code.address, code.size});
    Garbage garbage;
    std::lock_guard lock(writer().mutex);
    // Entries start inside the range; they may extend past it (a record spans shards of its whole extent).
    std::vector<Range> touched;
    for (const Range& range : ranges) {
      touched.push_back(range);
      for_each_shard(range.start, range.size, [&](std::size_t s) {
        if (const Table* t = g_shards[s].load())
          for (const Record* r : t->records)
            if (range.holds_start(*r)) touched.push_back({r->start, r->size});
      });
    }
    update(touched, [&](const Record& r) {
      return std::any_of(ranges.begin(), ranges.end(), [&](const Range& x) { return x.holds_start(r); });
    }, {}, garbage);
    wait_for_readers();  // Before returning: then the caller may free and reuse the memory.
  } catch (const std::bad_alloc&) {
  }
}

}  // namespace

const code_events::Sink code_events::kRegistrySink{&registry_added, &registry_released};

bool find_code(std::uintptr_t address, CodeInfo& out) noexcept {
  ReadSection section;
  const Record* r = find_in(g_shards[shard_of(address)].load(), address);
  if (!r) return false;
  copy_out(*r, out);
  return true;
}

std::vector<CodeInfo> registered_code() {
  std::vector<CodeInfo> out;
  ReadSection section;
  for (const auto& shard : g_shards) {
    const Table* t = shard.load();
    if (!t) continue;
    for (const Record* r : t->records) {
      // Listed once per region: keep it only in the shard of its first region.
      if (shard_of(r->start) != static_cast<std::size_t>(&shard - g_shards.data())) continue;
      copy_out(*r, out.emplace_back());
    }
  }
  std::sort(out.begin(), out.end(), [](const CodeInfo& a, const CodeInfo& b) { return a.start < b.start; });
  return out;
}

void register_code(std::uintptr_t start, std::size_t size, std::string_view name, CodeKind kind) noexcept {
  char fallback[32];
  if (name.empty()) {
    std::snprintf(fallback, sizeof fallback, "code:0x%lx", static_cast<unsigned long>(start));
    name = fallback;
  }
  code_events::code_added(start, size, name, kind,
                          std::span(reinterpret_cast<const std::uint8_t*>(start), size));
}

void unregister_code(std::uintptr_t start, std::size_t size) noexcept { code_events::code_released(start, size); }

}  // namespace punch::runtime
