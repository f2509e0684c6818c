#include "unwind_table.hpp"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>

#include <punch/runtime/fork_safe_mutex.hpp>

#include "proc_self_fd.hpp"

namespace punch::runtime::detail {
namespace {

// What readers see: entries sorted by start, pointing at rows the writer owns.
struct View {
  std::uintptr_t start;
  std::uintptr_t end;
  const FrameRow* rows;
  std::size_t count;
};
struct Snapshot {
  std::vector<View> views;
};

std::atomic<const Snapshot*> g_current{nullptr};
std::atomic<int> g_readers{0};

struct Writer {
  ForkSafeMutex mutex{LockRank::kDebugInfo};
  pid_t readers_pid = detail::current_pid();               // The process whose readers g_readers counts.
  std::vector<std::unique_ptr<UnwindTableEntry>> entries;  // Sorted by start; owns the rows.
  std::unique_ptr<Snapshot> current;

  // Publishes a snapshot of `entries` and returns the previous one once no reader can hold it.
  std::unique_ptr<Snapshot> publish() {
    auto next = std::make_unique<Snapshot>();
    next->views.reserve(entries.size());
    for (const auto& e : entries)
      next->views.push_back(View{e->start, e->start + e->size, e->rows.data(), e->rows.size()});
    g_current.store(next.get(), std::memory_order_seq_cst);
    std::unique_ptr<Snapshot> old = std::exchange(current, std::move(next));
    // In a child (fork, or a raw clone() without atfork handlers) the count may
    // include readers of the parent's other threads, which do not exist here.
    if (const pid_t me = detail::current_pid(); me != readers_pid) {
      g_readers.store(0);
      readers_pid = me;
    }
    // A reader that counted itself in before the store may hold the old snapshot.
    while (g_readers.load(std::memory_order_seq_cst) != 0) ::sched_yield();
    return old;
  }
};

Writer& writer() {
  static Writer* w = new Writer;  // Never destroyed: signal handlers may read during exit.
  return *w;
}
// Built while the program loads, not under a function-local static's guard a
// fork could copy taken (see "Fork safety" in docs/design.md).
[[maybe_unused]] const bool g_writer_built = (static_cast<void>(writer()), true);

}  // namespace

void unwind_table_add(std::vector<UnwindTableEntry> added) {
  if (added.empty()) return;
  Writer& w = writer();
  std::lock_guard lock(w.mutex);
  // A start registered again (code renamed without a release) replaces its entry.
  std::vector<std::unique_ptr<UnwindTableEntry>> replaced;
  for (auto& e : added) {
    auto same = std::find_if(w.entries.begin(), w.entries.end(), [&](const auto& x) { return x->start == e.start; });
    if (same != w.entries.end()) {
      replaced.push_back(std::move(*same));
      w.entries.erase(same);
    }
    w.entries.push_back(std::make_unique<UnwindTableEntry>(std::move(e)));
  }
  std::sort(w.entries.begin(), w.entries.end(), [](const auto& a, const auto& b) { return a->start < b->start; });
  w.publish();
}

void unwind_table_remove(std::span<const code_events::ReleasedCode> ranges) {
  Writer& w = writer();
  std::lock_guard lock(w.mutex);
  auto gone = std::stable_partition(w.entries.begin(), w.entries.end(), [&](const auto& e) {
    return std::none_of(ranges.begin(), ranges.end(),
                        [&](const auto& r) { return e->start >= r.address && e->start - r.address < r.size; });
  });
  if (gone == w.entries.end()) return;
  std::vector<std::unique_ptr<UnwindTableEntry>> removed(std::make_move_iterator(gone),
                                                         std::make_move_iterator(w.entries.end()));
  w.entries.erase(gone, w.entries.end());
  w.publish();  // After this no reader sees the removed rows; they are freed on return.
}

bool unwind_table_find(std::uintptr_t pc, FrameRow& row, std::uintptr_t& start) noexcept {
  g_readers.fetch_add(1, std::memory_order_seq_cst);
  bool found = false;
  if (const Snapshot* s = g_current.load(std::memory_order_seq_cst)) {
    // The last function starting at or before pc.
    std::size_t lo = 0, hi = s->views.size();
    while (lo < hi) {
      const std::size_t mid = lo + (hi - lo) / 2;
      if (s->views[mid].start <= pc)
        lo = mid + 1;
      else
        hi = mid;
    }
    if (lo > 0 && pc < s->views[lo - 1].end) {
      const View& v = s->views[lo - 1];
      const std::uint64_t offset = pc - v.start;
      std::size_t r = 0;
      while (r + 1 < v.count && v.rows[r + 1].offset <= offset) ++r;
      row = v.rows[r];
      start = v.start;
      found = v.count > 0;
    }
  }
  g_readers.fetch_sub(1, std::memory_order_seq_cst);
  return found;
}

std::size_t unwind_table_size() noexcept {
  g_readers.fetch_add(1, std::memory_order_seq_cst);
  const Snapshot* s = g_current.load(std::memory_order_seq_cst);
  const std::size_t n = s ? s->views.size() : 0;
  g_readers.fetch_sub(1, std::memory_order_seq_cst);
  return n;
}

}  // namespace punch::runtime::detail
