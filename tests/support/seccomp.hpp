// Make chosen system calls fail with an errno, in a child process (see child_process.hpp).
#pragma once

#include <initializer_list>
#include <string>

namespace punch::test {

//! One system call number (SYS_...) and the errno it returns from now on.
struct SyscallErrno {
  long syscall;
  int error;
};

//! Installs a seccomp filter on the calling thread and threads it creates
//! later (sets no_new_privs). Irreversible: call it in a child only.
//! Returns "" on success, else the reason.
std::string install_seccomp_errno(std::initializer_list<SyscallErrno> rules);

}  // namespace punch::test
