#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include <punch/runtime/maps.hpp>

#include "mdwe.hpp"
#include "placement.hpp"
#include "write_methods.hpp"

namespace punch::runtime::detail {

long write_by_mprotect(std::span<const WriterRegion> regions, std::uintptr_t address,
                       std::span<const std::uint8_t> bytes, std::optional<Error>& error) {
  const std::uintptr_t page = page_size();
  const std::uintptr_t lo = address & ~(page - 1);
  const std::uintptr_t hi = (address + bytes.size() + page - 1) & ~(page - 1);

  // The protections to restore, piece by piece; the whole range must be mapped.
  struct Piece {
    std::uintptr_t start, end;
    int prot;
  };
  std::vector<Piece> pieces;
  // Memory this writer mapped is R+X by construction; anything else is looked up.
  for (const WriterRegion& r : regions)
    if (lo >= r.rx.address && hi <= r.rx.address + r.rx.size) pieces.push_back({lo, hi, PROT_READ | PROT_EXEC});
  std::uintptr_t cursor = pieces.empty() ? lo : hi;
  auto maps = pieces.empty() ? read_mappings() : Result<std::vector<Mapping>>{};
  if (!maps) {
    error = maps.error();
    return -1;
  }
  for (const Mapping& m : *maps) {
    if (m.end <= cursor || m.start >= hi) continue;
    if (m.start > cursor) break;
    int prot = (m.readable ? PROT_READ : 0) | (m.writable ? PROT_WRITE : 0) | (m.executable ? PROT_EXEC : 0);
    pieces.push_back({cursor, std::min(m.end, hi), prot});
    cursor = std::min(m.end, hi);
    if (cursor == hi) break;
  }
  if (cursor != hi) {
    error = Error{ErrorCode::kNotMapped,
                  at(std::max(cursor, address)) + ": not mapped (writing " + range_text(address, bytes.size()) + ")",
                  std::max(cursor, address)};
    return -1;
  }
  bool executable = std::any_of(pieces.begin(), pieces.end(), [](const Piece& p) { return p.prot & PROT_EXEC; });
  if (executable && mdwe_in_force()) {
    error = Error{ErrorCode::kUnsupported,
                  range_text(address, bytes.size()) +
                      ": mprotect method cannot make code executable again under "
                      "MDWE (PR_SET_MDWE / MemoryDenyWriteExecute)",
                  address};
    return -1;
  }
  // Writable, never executable at the same time.
  if (::mprotect(reinterpret_cast<void*>(lo), hi - lo, PROT_READ | PROT_WRITE) != 0) {
    const int err = errno;  // ENOMEM: part of the range was unmapped behind our back.
    for (const Piece& p : pieces) ::mprotect(reinterpret_cast<void*>(p.start), p.end - p.start, p.prot);
    error =
        Error{err == ENOMEM ? ErrorCode::kNotMapped : ErrorCode::kIoError,
              range_text(address, bytes.size()) + ": mprotect to read+write failed: " + std::strerror(err), address};
    return -1;
  }
  std::memcpy(reinterpret_cast<void*>(address), bytes.data(), bytes.size());
  for (const Piece& p : pieces) {
    if (::mprotect(reinterpret_cast<void*>(p.start), p.end - p.start, p.prot) != 0) {
      error = Error{ErrorCode::kInconsistent,
                    range_text(address, bytes.size()) + ": bytes written but restoring the protection of " +
                        range_text(p.start, p.end - p.start) + " failed: " + std::strerror(errno) +
                        "; it is now read+write",
                    p.start};
      return -1;
    }
  }
  return static_cast<long>(bytes.size());
}

}  // namespace punch::runtime::detail
