#include "placement.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include <punch/runtime/maps.hpp>

namespace punch::runtime::detail {
namespace {

constexpr std::uintptr_t kLowest = 0x10000;          // Default vm.mmap_min_addr.
constexpr std::uintptr_t kUserTop = 0x7ffffffff000;  // End of the 47-bit user address space.
constexpr std::uintptr_t kStackRoom = 64u << 20;     // Left free below [stack] so it can grow.

std::string window_text(AddressWindow w) { return "[" + at(w.lo) + ", " + at(w.hi) + ")"; }

// The free page-aligned address closest to the window's middle that can hold `size` bytes.
std::optional<std::uintptr_t> find_gap(const std::vector<Mapping>& maps, std::size_t size, AddressWindow w) {
  const std::uintptr_t page = page_size();
  const std::uintptr_t mid = w.lo + (w.hi - w.lo) / 2;
  std::optional<std::uintptr_t> best;
  std::uintptr_t best_distance = UINTPTR_MAX;
  std::uintptr_t gap_lo = kLowest;
  for (std::size_t i = 0; i <= maps.size(); ++i) {
    std::uintptr_t gap_hi = i < maps.size() ? maps[i].start : kUserTop;
    if (i < maps.size() && maps[i].path == "[stack]") gap_hi = gap_hi > kStackRoom ? gap_hi - kStackRoom : 0;
    std::uintptr_t lo = std::max(gap_lo, w.lo);
    std::uintptr_t hi = std::min(gap_hi, w.hi);
    lo = (lo + page - 1) & ~(page - 1);
    hi &= ~(page - 1);
    if (lo < hi && hi - lo >= size) {
      std::uintptr_t want = mid & ~(page - 1);
      std::uintptr_t p = want < lo ? lo : (want > hi - size ? hi - size : want);
      std::uintptr_t distance = p > mid ? p - mid : mid - p;
      if (distance < best_distance) {
        best = p;
        best_distance = distance;
      }
    }
    if (i < maps.size()) gap_lo = std::max(gap_lo, maps[i].end);
  }
  return best;
}

}  // namespace

std::size_t page_size() noexcept {
  static const std::size_t size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

Status has_gap_in_window(std::size_t size, AddressWindow window) {
  if (window.empty()) return fail(ErrorCode::kInvalidArgument, "address window " + window_text(window) + " is empty");
  if (window.lo == 0 && window.hi == UINTPTR_MAX) return {};  // The kernel chooses.
  auto maps = read_mappings();
  if (!maps) return tl::unexpected(std::move(maps).error());
  if (!find_gap(*maps, size, window))
    return fail(ErrorCode::kOutOfMemory,
                "no free range of " + std::to_string(size) + " bytes within " + window_text(window));
  return {};
}

Result<std::uintptr_t> map_in_window(std::size_t size, int prot, int flags, int fd, AddressWindow window) {
  if (window.empty()) return fail(ErrorCode::kInvalidArgument, "address window " + window_text(window) + " is empty");
  if (window.lo == 0 && window.hi == UINTPTR_MAX) {
    void* p = ::mmap(nullptr, size, prot, flags, fd, 0);
    if (p == MAP_FAILED)
      return fail(ErrorCode::kOutOfMemory,
                  "mmap of " + std::to_string(size) + " bytes failed: " + std::strerror(errno));
    return reinterpret_cast<std::uintptr_t>(p);
  }
  // Another thread may map the gap between our look and our claim: look again then.
  for (int attempt = 0; attempt < 16; ++attempt) {
    auto maps = read_mappings();
    if (!maps) return tl::unexpected(std::move(maps).error());
    auto where = find_gap(*maps, size, window);
    if (!where)
      return fail(ErrorCode::kOutOfMemory,
                  "no free range of " + std::to_string(size) + " bytes within " + window_text(window));
    void* want = reinterpret_cast<void*>(*where);
    void* p = ::mmap(want, size, prot, flags | MAP_FIXED_NOREPLACE, fd, 0);
    if (p == want) return *where;
    if (p != MAP_FAILED) {  // A kernel without MAP_FIXED_NOREPLACE took it as a hint only.
      ::munmap(p, size);
      return fail(ErrorCode::kUnsupported,
                  "mmap at " + at(want) + " placed the mapping at " + at(p) + " (MAP_FIXED_NOREPLACE unsupported?)");
    }
    if (errno != EEXIST)
      return fail(ErrorCode::kOutOfMemory,
                  "mmap of " + std::to_string(size) + " bytes at " + at(want) + " failed: " + std::strerror(errno));
  }
  return fail(ErrorCode::kOutOfMemory,
              "free ranges within " + window_text(window) + " kept being taken by other threads");
}

}  // namespace punch::runtime::detail
