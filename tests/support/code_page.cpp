#include "code_page.hpp"

#include <sys/mman.h>
#include <unistd.h>

namespace punch::test {

bool map_code_at(std::uintptr_t page, std::span<const std::uint8_t> code) {
  if (code.size() > 4096) return false;
  const int fd = ::memfd_create("punch-test-code", MFD_CLOEXEC);
  if (fd < 0) return false;
  const bool written =
      ::ftruncate(fd, 4096) == 0 && ::pwrite(fd, code.data(), code.size(), 0) == static_cast<ssize_t>(code.size());
  void* mapped =
      written ? ::mmap(reinterpret_cast<void*>(page), 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_FIXED, fd, 0)
              : MAP_FAILED;
  ::close(fd);
  return mapped != MAP_FAILED;
}

}  // namespace punch::test
