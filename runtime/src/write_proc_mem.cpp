#include <sys/syscall.h>

#include <punch/runtime/raw_syscall.hpp>

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
  // Raw: a change may be under way, with a tripwire over libc's pwrite (threads.cpp).
  return raw_syscall(SYS_pwrite64, *fd, reinterpret_cast<long>(bytes.data()), static_cast<long>(bytes.size()),
                     static_cast<long>(address));
}

}  // namespace punch::runtime::detail
