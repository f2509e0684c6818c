// Small helpers for the files tools read (perf map, jitdump).
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include <unistd.h>

namespace punch::runtime::detail {

//! Writes all of `size` bytes (retrying short writes and EINTR); false on error.
inline bool write_all(int fd, const void* data, std::size_t size) noexcept {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

//! Whether the environment variable `name` is set to "1".
inline bool env_flag(const char* name) noexcept {
  const char* value = std::getenv(name);
  return value != nullptr && std::strcmp(value, "1") == 0;
}

}  // namespace punch::runtime::detail
