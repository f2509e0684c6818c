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

#include <sched.h>
#include <sys/types.h>

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
#include "proc_self_fd.hpp"
#include "registered_frames.hpp"

namespace punch::runtime {
namespace {

// One registered piece of code, its name stored inline (one allocation).
struct Record {
  std::uintptr_t start;
  std::size_t size;
  CodeKind kind;
  std::size_t name_size;  // The name's bytes follow the record (the allocation is sized for them).

  std::uintptr_t end() const noexcept { return start + size; }
  const char* name() const noexcept { return reinterpret_cast<const char*>(this + 1); }

  static const Record* make(std::uintptr_t start, std::size_t size, CodeKind kind, std::string_view name) {
    void* memory = ::operator new(sizeof(Record) + name.size());
    auto* r = new (memory) Record{start, size, kind, name.size()};
    std::memcpy(r + 1, name.data(), name.size());
    return r;
  }
  static void destroy(const Record* r) noexcept { ::operator delete(const_cast<Record*>(r)); }
};

struct Table {
  std::vector<const Record*> records;  // Sorted by start, never overlapping.
  std::vector<std::uintptr_t> starts;  // records[i]->start: a lookup searches these, touching one record.
};

constexpr unsigned kRegionShift = 16;
constexpr std::size_t kShards = 1024;

std::array<std::atomic<const Table*>, kShards> g_shards{};  // Zero: empty.
std::atomic<std::uint64_t> g_epoch{0};
std::array<std::atomic<std::uint64_t>, 2> g_readers{};  // Readers inside, by epoch parity.

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

// The process whose readers the counters count (written under the writer lock).
pid_t g_counters_pid = detail::current_pid();

// Waits until no reader can still hold a table or record unpublished before
// the call. Caller holds the writer lock.
void wait_for_readers() noexcept {
  // In a child (fork, or a raw clone() that runs no atfork handler) the
  // counters may count readers of the parent's other threads, which do not
  // exist here: only this thread does, and it is not reading.
  if (const pid_t me = detail::current_pid(); me != g_counters_pid) {
    g_readers[0].store(0);
    g_readers[1].store(0);
    g_counters_pid = me;
  }
  const std::uint64_t old_parity = g_epoch.fetch_add(1) & 1;
  while (g_readers[old_parity].load() != 0) sched_yield();
}

// The writers' lock. Built while the program loads, not on first use under
// a function-local static's guard (see CodeWriter::global); never destroyed,
// so code can be released during exit.
ForkSafeMutex& writer_mutex() {
  static auto* m = new ForkSafeMutex(LockRank::kCodeNames);
  return *m;
}
[[maybe_unused]] const bool g_writer_mutex_built = (static_cast<void>(writer_mutex()), true);

const Record* find_in(const Table* table, std::uintptr_t address) noexcept {
  if (!table) return nullptr;
  auto it = std::upper_bound(table->starts.begin(), table->starts.end(), address);
  if (it == table->starts.begin()) return nullptr;
  const Record* r = table->records[static_cast<std::size_t>(it - table->starts.begin()) - 1];
  return address - r->start < r->size ? r : nullptr;
}

void copy_out(const Record& r, CodeInfo& out) noexcept {
  out.start = r.start;
  out.size = r.size;
  out.kind = r.kind;
  const std::size_t n = std::min(r.name_size, CodeInfo::kNameCapacity - 1);
  std::memcpy(out.name, r.name(), n);
  out.name[n] = '\0';
}

// Tables and records a change unpublished: freed once readers have left.
struct Garbage {
  std::vector<const Table*> tables;
  std::vector<const Record*> records;
  ~Garbage() {
    for (const Table* t : tables) delete t;
    std::sort(records.begin(), records.end());  // A record listed in several shards is dropped from each.
    records.erase(std::unique(records.begin(), records.end()), records.end());
    for (const Record* r : records) Record::destroy(r);
  }
};

struct Range {
  std::uintptr_t start, size;
  std::uintptr_t end() const noexcept { return start + size; }
};

// A set of address ranges, merged and sorted: "does a record overlap any of
// them" and "does a record start in one of them" cost O(log n).
class RangeSet {
 public:
  explicit RangeSet(std::vector<Range> ranges) : ranges_(std::move(ranges)) {
    const auto by_start = [](const Range& a, const Range& b) { return a.start < b.start; };
    if (!std::is_sorted(ranges_.begin(), ranges_.end(), by_start)) std::sort(ranges_.begin(), ranges_.end(), by_start);
    std::vector<Range> merged;
    for (const Range& r : ranges_) {
      if (!merged.empty() && r.start <= merged.back().end())
        merged.back().size = std::max(merged.back().end(), r.end()) - merged.back().start;
      else
        merged.push_back(r);
    }
    ranges_ = std::move(merged);
  }
  const std::vector<Range>& ranges() const noexcept { return ranges_; }
  bool overlaps(const Record& r) const noexcept {
    const Range* x = last_starting_before(r.end());
    return x && x->end() > r.start;
  }
  bool holds_start(const Record& r) const noexcept {
    const Range* x = last_starting_before(r.start + 1);
    return x && r.start < x->end();
  }

 private:
  const Range* last_starting_before(std::uintptr_t a) const noexcept {
    auto it = std::partition_point(ranges_.begin(), ranges_.end(), [a](const Range& x) { return x.start < a; });
    return it == ranges_.begin() ? nullptr : &*(it - 1);
  }
  std::vector<Range> ranges_;
};

// Applies one change under the writer lock: in every shard of `touched`,
// drops the records `drop` says, and lists each of `added` in the shards of
// its regions. Old tables and dropped records go to `garbage`.
template <class Drop>
void update(std::span<const Range> touched, Drop&& drop, std::span<const Record* const> added, Garbage& garbage) {
  std::vector<std::pair<std::size_t, const Record*>> listed;  // (shard, record) for every added record.
  for (const Record* r : added) for_each_shard(r->start, r->size, [&](std::size_t s) { listed.emplace_back(s, r); });
  std::vector<std::size_t> shards;
  for (const Range& range : touched)
    for_each_shard(range.start, range.size, [&](std::size_t s) { shards.push_back(s); });
  for (const auto& [s, r] : listed) shards.push_back(s);
  std::sort(shards.begin(), shards.end());
  shards.erase(std::unique(shards.begin(), shards.end()), shards.end());
  // By shard, then by start: each shard's new records come sorted, to merge with the kept ones.
  std::sort(listed.begin(), listed.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first < b.first : a.second->start < b.second->start;
  });
  const auto by_start = [](const Record* a, const Record* b) { return a->start < b->start; };
  std::vector<const Record*> fresh;
  for (std::size_t s : shards) {
    const Table* old = g_shards[s].load();
    auto* table = new Table;
    bool changed = false;
    if (old) {
      table->records.reserve(old->records.size() + listed.size());
      for (const Record* r : old->records) {
        if (!drop(*r)) {
          table->records.push_back(r);
          continue;
        }
        changed = true;
        garbage.records.push_back(r);
      }
    }
    fresh.clear();
    auto first = std::partition_point(listed.begin(), listed.end(), [s](const auto& x) { return x.first < s; });
    for (auto it = first; it != listed.end() && it->first == s; ++it) fresh.push_back(it->second);
    if (!changed && fresh.empty()) {  // Nothing of this change lives here: keep the published table.
      delete table;
      continue;
    }
    const std::size_t kept = table->records.size();
    table->records.insert(table->records.end(), fresh.begin(), fresh.end());
    std::inplace_merge(table->records.begin(), table->records.begin() + static_cast<std::ptrdiff_t>(kept),
                       table->records.end(), by_start);
    table->starts.reserve(table->records.size());
    for (const Record* r : table->records) table->starts.push_back(r->start);
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
      added.push_back(Record::make(code.address, code.size, code.kind, code.name));
      ranges.push_back({code.address, code.size});
    }
    const RangeSet set(std::move(ranges));
    Garbage garbage;  // Freed after the lock is released, once readers have left.
    std::lock_guard lock(writer_mutex());
    // New code replaces whatever stale entry it overlaps (an owner that never released it).
    update(
        set.ranges(), [&](const Record& r) { return set.overlaps(r); }, added, garbage);
    wait_for_readers();
  } catch (const std::bad_alloc&) {
    // Best effort: without memory the code stays unnamed.
  }
}

void registry_released(std::span<const code_events::ReleasedCode> batch) {
  try {
    std::vector<Range> ranges;
    for (const auto& code : batch) ranges.push_back({code.address, code.size});
    const RangeSet set(std::move(ranges));
    Garbage garbage;
    std::lock_guard lock(writer_mutex());
    // Entries that start in a range may extend past it, into shards of their own.
    std::vector<Range> touched = set.ranges();
    for (const Range& range : set.ranges()) {
      for_each_shard(range.start, range.size, [&](std::size_t s) {
        const Table* t = g_shards[s].load();
        if (!t) return;
        auto it = std::lower_bound(t->starts.begin(), t->starts.end(), range.start);
        for (; it != t->starts.end() && *it < range.end(); ++it) {
          const Record* r = t->records[static_cast<std::size_t>(it - t->starts.begin())];
          if (r->end() > range.end()) touched.push_back({r->start, r->size});
        }
      });
    }
    update(
        touched, [&](const Record& r) { return set.holds_start(r); }, {}, garbage);
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
  const std::span bytes(reinterpret_cast<const std::uint8_t*>(start), size);
  code_events::code_added(start, size, name, kind, bytes, detail::frame_rows_of(kind, bytes));
}

void unregister_code(std::uintptr_t start, std::size_t size) noexcept { code_events::code_released(start, size); }

}  // namespace punch::runtime
