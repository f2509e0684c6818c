#include <unistd.h>

#include <cerrno>

#include "proc_mem.hpp"
#include "write_methods.hpp"

namespace punch::runtime::detail {

long write_by_proc_mem(std::uintptr_t address, std::span<const std::uint8_t> bytes, std::optional<Error>& error) {
  auto fd = proc_mem_fd();
  if (!fd) {
    error = fd.error();
    return -1;
  }
  ssize_t n = ::pwrite(*fd, bytes.data(), bytes.size(), static_cast<off_t>(address));
  return n < 0 ? -errno : n;
}

}  // namespace punch::runtime::detail
