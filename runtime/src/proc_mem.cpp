#include "proc_mem.hpp"

#include <fcntl.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include <punch/runtime/fork_safe_mutex.hpp>

namespace punch::runtime::detail {
namespace {

std::atomic<int> g_fd{-1};
std::atomic<pid_t> g_owner{0};  // The pid g_fd was opened in.

ForkSafeMutex& reopen_mutex() {
  static auto* m = new ForkSafeMutex(LockRank::kWriter);  // Never destroyed: used until exit.
  return *m;
}
// Built while the program loads: a fork during the first reopen_mutex() call
// would leave the child's copy of the static's initialization guard taken.
[[maybe_unused]] const bool g_reopen_mutex_built = (static_cast<void>(reopen_mutex()), true);

}  // namespace

Result<int> proc_mem_fd() {
  const pid_t me = ::getpid();
  if (g_owner.load(std::memory_order_acquire) == me) return g_fd.load(std::memory_order_relaxed);

  std::lock_guard guard(reopen_mutex());
  if (g_owner.load(std::memory_order_acquire) == me) return g_fd.load(std::memory_order_relaxed);
  // Opened by a parent (or never): that descriptor names the parent's memory.
  if (int inherited = g_fd.exchange(-1); inherited >= 0) ::close(inherited);
  int fd = ::open("/proc/self/mem", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    std::string why = std::string("/proc/self/mem: cannot open: ") + std::strerror(err);
    if (err == EACCES && ::prctl(PR_GET_DUMPABLE) == 0)
      why += " (the process is not dumpable, e.g. after setuid, so /proc/self belongs to root)";
    return fail(ErrorCode::kUnsupported, why);
  }
  g_fd.store(fd, std::memory_order_relaxed);
  g_owner.store(me, std::memory_order_release);
  return fd;
}

}  // namespace punch::runtime::detail
