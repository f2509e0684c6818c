// The process's one descriptor on /proc/self/mem.
#pragma once

#include <punch/result.hpp>

namespace punch::runtime::detail {

//! The O_RDWR|O_CLOEXEC descriptor on /proc/self/mem, opened on first use.
//! A descriptor inherited over fork names the PARENT's memory, so it is
//! reopened whenever the pid changed since it was opened (read without a
//! system call: see current_pid() in proc_self_fd.hpp; this also covers raw
//! clone() children, which pthread_atfork would miss).
//! kUnsupported when the file is missing or cannot be opened, with errno text.
Result<int> proc_mem_fd();

//! The same descriptor, or -errno: no allocation, async-signal-safe.
int proc_mem_fd_raw() noexcept;

}  // namespace punch::runtime::detail
