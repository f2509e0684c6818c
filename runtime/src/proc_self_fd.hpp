// A descriptor on a /proc/self file that always names the calling process.
#pragma once

#include <fcntl.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>

namespace punch::runtime::detail {

//! Opened on first use, and again whenever the pid changed since: a
//! descriptor inherited over fork names the PARENT's process (for
//! /proc/self/mem, its memory), and a pid check also covers raw clone() and
//! vfork() children, which pthread_atfork misses. Lock-free and constant-
//! initialized (no lazy static for a fork to catch half-built): two threads
//! that reopen at once both open, one publishes, the other closes its own.
class ProcSelfFd {
 public:
  constexpr ProcSelfFd(const char* path, int flags) noexcept : path_(path), flags_(flags) {}

  //! The descriptor, or -errno when the file cannot be opened.
  int get() noexcept {
    const pid_t me = ::getpid();
    std::uint64_t word = word_.load(std::memory_order_acquire);
    if (word != 0 && pid_of(word) == me) return fd_of(word);
    const int fd = ::open(path_, flags_ | O_CLOEXEC);
    if (fd < 0) return -errno;
    if (word_.compare_exchange_strong(word, pack(me, fd), std::memory_order_acq_rel)) {
      if (word != 0) ::close(fd_of(word));  // The parent's: no thread of this process uses it.
      return fd;
    }
    ::close(fd);  // Another thread published first; `word` now holds its descriptor.
    return fd_of(word);
  }

 private:
  static constexpr std::uint64_t pack(pid_t pid, int fd) {
    return static_cast<std::uint64_t>(static_cast<std::uint32_t>(pid)) << 32 | static_cast<std::uint32_t>(fd);
  }
  static constexpr pid_t pid_of(std::uint64_t word) { return static_cast<pid_t>(word >> 32); }
  static constexpr int fd_of(std::uint64_t word) { return static_cast<int>(word & 0xffffffffu); }

  const char* path_;
  int flags_;
  std::atomic<std::uint64_t> word_{0};  // pid << 32 | fd; 0 = not open.
};

}  // namespace punch::runtime::detail
