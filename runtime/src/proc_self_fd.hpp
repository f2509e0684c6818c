// A descriptor on a /proc/self file that always names the calling process.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>

namespace punch::runtime::detail {

// The pid cache of current_pid(): one page mapped with MADV_WIPEONFORK, so
// the kernel hands a child of any fork (fork, or a raw clone() without
// CLONE_VM, which pthread_atfork misses) a zeroed copy. Constant-initialized.
inline pid_t g_pid_no_page = 0;  // Its address marks "madvise refused: no cache".
inline constinit std::atomic<pid_t*> g_pid_page{nullptr};

//! getpid() without a system call on the hot path (it cost 83 ns per write).
//! A process that shares its memory (vfork, CLONE_VM) also shares the cache,
//! so it sees the pid that owns the memory; that is the one a /proc/self/mem
//! descriptor has to match. Where MADV_WIPEONFORK is refused (Linux < 4.14),
//! every call is a getpid().
inline pid_t current_pid() noexcept {
  pid_t* page = g_pid_page.load(std::memory_order_acquire);
  if (page == nullptr) {
    // Lock-free, once per process: two threads that map at once both map,
    // one publishes, the other unmaps its own. A fork child inherits either
    // nothing (and maps its own) or the published page, wiped.
    void* fresh = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    pid_t* mine = &g_pid_no_page;
    if (fresh != MAP_FAILED && ::madvise(fresh, 4096, MADV_WIPEONFORK) == 0) mine = static_cast<pid_t*>(fresh);
    if (g_pid_page.compare_exchange_strong(page, mine, std::memory_order_acq_rel)) page = mine;
    if (fresh != MAP_FAILED && page != fresh) ::munmap(fresh, 4096);
  }
  if (page == &g_pid_no_page) return ::getpid();
  std::atomic_ref<pid_t> cached(*page);
  pid_t pid = cached.load(std::memory_order_relaxed);
  if (pid == 0) {  // First call in this process: every thread stores the same value.
    pid = ::getpid();
    cached.store(pid, std::memory_order_relaxed);
  }
  return pid;
}

//! Opened on first use, and again whenever the pid changed since: a
//! descriptor inherited over fork names the PARENT's process (for
//! /proc/self/mem, its memory); the pid comes from current_pid(), which also
//! sees raw clone() children. Lock-free and constant-initialized (no lazy
//! static for a fork to catch half-built): two threads that reopen at once
//! both open, one publishes, the other closes its own.
class ProcSelfFd {
 public:
  constexpr ProcSelfFd(const char* path, int flags) noexcept : path_(path), flags_(flags) {}

  //! The descriptor, or -errno when the file cannot be opened.
  int get() noexcept {
    const pid_t me = current_pid();
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
