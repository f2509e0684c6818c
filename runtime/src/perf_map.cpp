// The perf map sink: one "START SIZE name" line per piece of code added.
#include <punch/runtime/perf_map.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <mutex>

#include <punch/runtime/code_registry.hpp>
#include <punch/runtime/fork_safe_mutex.hpp>

#include "code_events.hpp"
#include "proc_self_fd.hpp"
#include "tool_file.hpp"

namespace punch::runtime {
namespace {

struct PerfMap {
  ForkSafeMutex mutex{LockRank::kCodeNames};
  std::atomic<bool> on{false};  // Read without the lock: one load per batch when off.
  int fd = -1;
  pid_t pid = 0;  // The process the open file belongs to.
  std::string path;
  std::size_t entries = 0;
};

// Built while the program loads (see CodeWriter::global); never destroyed.
PerfMap& perf_map() {
  static auto* map = new PerfMap;
  return *map;
}

void append_line(std::string& out, std::uintptr_t start, std::size_t size, std::string_view name) {
  char head[48];
  std::snprintf(head, sizeof head, "%lx %lx ", static_cast<unsigned long>(start), static_cast<unsigned long>(size));
  out += head;
  for (char c : name) out += (c == '\n' || c == '\r') ? ' ' : c;  // One line per entry, whatever the name.
  out += '\n';
}

// The functions below run with the map's lock held.

void write_locked(PerfMap& map, const std::string& text, std::size_t lines) {
  if (map.fd >= 0 && detail::write_all(map.fd, text.data(), text.size())) map.entries += lines;
}

// Opens this process's map (closing one inherited from a parent) and writes
// everything registered now, which includes any batch being announced.
Status open_locked(PerfMap& map) {
  if (map.fd >= 0) ::close(map.fd);  // Another process's file (we are a fork child), or ours.
  map.fd = -1;
  const pid_t pid = detail::current_pid();
  std::string path = "/tmp/perf-" + std::to_string(pid) + ".map";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    map.on.store(false);
    return fail(ErrorCode::kIoError, path + ": cannot open the perf map: " + std::strerror(errno));
  }
  map.fd = fd;
  map.pid = pid;
  map.path = std::move(path);
  map.entries = 0;
  map.on.store(true);
  std::string text;
  const auto existing = registered_code();
  for (const CodeInfo& code : existing) append_line(text, code.start, code.size, code.name);
  write_locked(map, text, existing.size());
  return {};
}

void perf_map_added(std::span<const code_events::AddedCode> batch) {
  PerfMap& map = perf_map();
  if (!map.on.load(std::memory_order_relaxed)) return;
  try {
    std::string text;
    for (const auto& code : batch) append_line(text, code.address, code.size, code.name);
    std::lock_guard lock(map.mutex);  // Held for the write only.
    if (map.fd < 0) return;
    // A child of a raw clone() (no atfork handler ran) opens its own map here.
    if (map.pid != detail::current_pid()) return static_cast<void>(open_locked(map));
    write_locked(map, text, batch.size());
  } catch (const std::bad_alloc&) {
    // Best effort: the code stays unnamed in perf.
  }
}

void perf_map_released(std::span<const code_events::ReleasedCode>) {}  // The format cannot say it.

// A child of fork() writes its own map at once, starting with the code it inherited.
void reopen_in_child() {
  PerfMap& map = perf_map();
  if (!map.on.load()) return;
  try {
    std::lock_guard lock(map.mutex);
    (void)open_locked(map);
  } catch (const std::bad_alloc&) {
  }
}

[[maybe_unused]] const bool g_perf_map_ready = [] {
  (void)perf_map();
  if (detail::env_flag("PUNCH_PERF_MAP")) (void)enable_perf_map();
  return true;
}();

}  // namespace

const code_events::Sink code_events::kPerfMapSink{&perf_map_added, &perf_map_released};

Status enable_perf_map() {
  PerfMap& map = perf_map();
  // From the first enable on, a fork child opens its own map (a program that
  // never turns the map on does nothing at fork). Lock-free: see docs/design.md.
  (void)run_in_fork_children(reopen_in_child);
  try {
    std::lock_guard lock(map.mutex);
    if (map.fd >= 0 && map.pid == detail::current_pid()) return {};
    return open_locked(map);
  } catch (const std::bad_alloc&) {
    return fail(ErrorCode::kOutOfMemory, "enable_perf_map: out of memory");
  }
}

void disable_perf_map() {
  PerfMap& map = perf_map();
  std::lock_guard lock(map.mutex);
  map.on.store(false);
  if (map.fd >= 0) ::close(map.fd);
  map.fd = -1;
  map.path.clear();
}

std::string perf_map_path() {
  PerfMap& map = perf_map();
  std::lock_guard lock(map.mutex);
  return map.path;
}

std::size_t perf_map_entries() {
  PerfMap& map = perf_map();
  std::lock_guard lock(map.mutex);
  return map.entries;
}

}  // namespace punch::runtime
