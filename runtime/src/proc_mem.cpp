#include "proc_mem.hpp"

#include <fcntl.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "proc_self_fd.hpp"

namespace punch::runtime::detail {
namespace {

constinit ProcSelfFd g_proc_mem{"/proc/self/mem", O_RDWR};

// current_pid()'s cache is filled while the program loads, so that a vfork
// child sharing the memory finds the owner's pid there, never stores its own.
[[maybe_unused]] const pid_t g_pid_at_load = current_pid();

}  // namespace

int proc_mem_fd_raw() noexcept { return g_proc_mem.get(); }

Result<int> proc_mem_fd() {
  const int fd = g_proc_mem.get();
  if (fd >= 0) return fd;
  std::string why = std::string("/proc/self/mem: cannot open: ") + std::strerror(-fd);
  if (-fd == EACCES && ::prctl(PR_GET_DUMPABLE) == 0)
    why += " (the process is not dumpable, e.g. after setuid, so /proc/self belongs to root)";
  return fail(ErrorCode::kUnsupported, why);
}

}  // namespace punch::runtime::detail
