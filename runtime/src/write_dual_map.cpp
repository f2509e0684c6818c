#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "placement.hpp"
#include "write_methods.hpp"

namespace punch::runtime::detail {

long write_by_dual_map(std::span<const WriterRegion> regions, std::uintptr_t address,
                       std::span<const std::uint8_t> bytes, std::optional<Error>& error) {
  for (const WriterRegion& r : regions) {
    if (address >= r.rx.address && address - r.rx.address < r.rx.size) {
      std::size_t offset = address - r.rx.address;
      if (bytes.size() > r.rx.size - offset) break;
      std::memcpy(reinterpret_cast<void*>(r.rw + offset), bytes.data(), bytes.size());
      return static_cast<long>(bytes.size());
    }
  }
  error = Error{ErrorCode::kNotOwned,
                range_text(address, bytes.size()) +
                    ": not inside one region this dual-map writer mapped (it has no "
                    "writable view of other memory)",
                address};
  return -1;
}

Result<WriterRegion> map_dual_region(std::size_t size, AddressWindow window) {
  constexpr std::uint8_t kInt3 = 0xCC;
  int fd = ::memfd_create("punch-code", MFD_CLOEXEC);
  if (fd < 0) return fail(ErrorCode::kUnsupported, std::string("memfd_create failed: ") + std::strerror(errno));
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    int err = errno;
    ::close(fd);
    return fail(ErrorCode::kOutOfMemory, "ftruncate of the code memfd failed: " + std::string(std::strerror(err)));
  }
  auto rx = map_in_window(size, PROT_READ | PROT_EXEC, MAP_SHARED, fd, window);
  if (!rx) {
    ::close(fd);
    return tl::unexpected(std::move(rx).error());
  }
  void* rw = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int err = errno;
  ::close(fd);  // The two mappings keep the memory alive.
  if (rw == MAP_FAILED) {
    ::munmap(reinterpret_cast<void*>(*rx), size);
    return fail(ErrorCode::kOutOfMemory, "mmap of the writable view failed: " + std::string(std::strerror(err)));
  }
  std::memset(rw, kInt3, size);
  return WriterRegion{CodeRegion{*rx, size}, reinterpret_cast<std::uintptr_t>(rw)};
}

}  // namespace punch::runtime::detail
