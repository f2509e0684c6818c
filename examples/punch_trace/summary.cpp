#include "summary.hpp"

#include <fcntl.h>
#include <sys/syscall.h>

#include <cerrno>
#include <cstddef>
#include <string_view>

#include <punch/runtime/raw_syscall.hpp>

namespace punch_trace {
namespace {

// Appends to a fixed buffer, truncating silently; no allocation, no libc.
class Text {
 public:
  void add(std::string_view s) noexcept {
    for (char c : s)
      if (size_ < sizeof(buffer_)) buffer_[size_++] = c;
  }
  void add_u64(std::uint64_t v, std::size_t width = 0) noexcept {
    char digits[24];
    std::size_t n = 0;
    // clang-format off
    do digits[n++] = static_cast<char>('0' + v % 10), v /= 10; while (v != 0);
    // clang-format on
    for (std::size_t i = n; i < width; ++i) add(" ");
    while (n != 0) add(std::string_view(&digits[--n], 1));
  }
  void add_hex(std::uint64_t v) noexcept {
    add("0x");
    char digits[16];
    std::size_t n = 0;
    // clang-format off
    do digits[n++] = "0123456789abcdef"[v & 15], v >>= 4; while (v != 0);
    // clang-format on
    while (n != 0) add(std::string_view(&digits[--n], 1));
  }
  void pad_to(std::size_t line_start, std::size_t column) noexcept {
    while (size_ - line_start < column && size_ < sizeof(buffer_)) add(" ");  // A full buffer stays full.
  }
  std::size_t size() const noexcept { return size_; }
  const char* data() const noexcept { return buffer_; }

 private:
  char buffer_[1 << 16];
  std::size_t size_ = 0;
};

Text g_text;  // Static: the summary may be written on a small stack.

void write_all(int fd, const char* data, std::size_t size) noexcept {
  while (size != 0) {
    const long n = punch::runtime::raw_syscall(SYS_write, fd, reinterpret_cast<long>(data), static_cast<long>(size));
    if (n == -EINTR) continue;
    if (n <= 0) return;
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}

// Total time in ms and time per call in ns of a timed function, or two dashes.
void add_time(Text& t, const TracedFunction& fn, double ns_per_tick) noexcept {
  if (!fn.timed) {
    t.add("          -          -");
    return;
  }
  const double ns = static_cast<double>(fn.ticks.load(std::memory_order_relaxed)) * ns_per_tick;
  const std::uint64_t calls = fn.calls.load(std::memory_order_relaxed);
  t.add_u64(static_cast<std::uint64_t>(ns / 1e6), 11);
  t.add_u64(calls == 0 ? 0 : static_cast<std::uint64_t>(ns / static_cast<double>(calls)), 11);
}

void add_function_line(Text& t, const TracedFunction& fn, double ns_per_tick) noexcept {
  const std::size_t start = t.size();
  t.add("  ");
  t.add(fn.spec);
  t.pad_to(start, 30);
  t.add(" ");
  if (!fn.looked_up.load()) {  // The process forked, or ended, before the hooking thread got to it.
    t.add("not looked up yet\n");
    return;
  }
  if (fn.target == nullptr) {
    t.add("not hooked: ");
    t.add(fn.unresolved);
    t.add("\n");
    return;
  }
  t.add_u64(fn.calls.load(std::memory_order_relaxed), 14);
  t.add_u64(fn.installs.load(), 9);
  t.add_u64(fn.removals.load(), 9);
  t.add_u64(fn.refusals.load(), 9);
  t.add(fn.redirecting.load() ? "  yes           " : "  no            ");
  add_time(t, fn, ns_per_tick);
  t.add("  ");
  t.add_hex(reinterpret_cast<std::uintptr_t>(fn.target));
  if (!fn.shares_code_with.empty()) {
    t.add(" (same code as ");
    t.add(fn.shares_code_with);
    t.add(": counts are for both)");
  }
  t.add("\n");
}

}  // namespace

void write_summary(const std::deque<TracedFunction>& functions, const RunFacts& facts) noexcept {
  Text& t = g_text;
  t.add("punch_trace: pid ");
  t.add_u64(static_cast<std::uint64_t>(facts.pid));
  t.add(" (");
  t.add(facts.program);
  t.add("), ");
  t.add_u64(facts.elapsed_ns / 1000000);
  t.add(" ms, ");
  if (facts.toggle_ms == 0) {
    t.add("hooks installed once");
  } else {
    t.add("hooks removed and re-installed every ");
    t.add_u64(facts.toggle_ms);
    t.add(" ms (");
    t.add_u64(facts.toggle_phases);
    t.add(" phases)");
  }
  if (!facts.hooking_finished) t.add("; the program ended before every hook was tried");
  t.add(
      "\n  function                         calls installs removals  refused  hooked at exit    time ms    ns/call  "
      "address\n");
  for (const auto& fn : functions) add_function_line(t, fn, facts.ns_per_tick);
  for (const auto& fn : functions) {
    if (fn.refusals.load() == 0) continue;
    t.add("  refused ");
    t.add(fn.spec);
    t.add(" (first of ");
    t.add_u64(fn.refusals.load());
    t.add("): ");
    t.add(fn.first_refusal);
    t.add("\n");
  }

  int fd = 2;
  if (facts.out_path != nullptr) {
    const long opened = punch::runtime::raw_syscall(SYS_openat, AT_FDCWD, reinterpret_cast<long>(facts.out_path),
                                                    O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (opened < 0) return;  // Never the program's streams instead: say nothing.
    fd = static_cast<int>(opened);
  }
  write_all(fd, t.data(), t.size());
  if (fd != 2) punch::runtime::raw_syscall(SYS_close, fd);
}

}  // namespace punch_trace
