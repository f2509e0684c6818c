// Run a piece of a test in a forked child process (for hostile setups:
// seccomp filters, prctl, namespaces, setuid; they must not leak into the
// test binary).
#pragma once

#include <functional>
#include <string>

namespace punch::test {

//! How a child ended, and everything it wrote to stdout and stderr.
struct ChildOutcome {
  int exit_code = -1;  //!< The body's return value when it exited normally, else -1.
  int signal = 0;      //!< The signal that killed it, else 0.
  std::string output;  //!< stdout and stderr, interleaved.

  //! "exit 3" or "killed by signal 11", then the output: for assertion messages.
  std::string describe() const;
};

//! Forks; the child runs `body` with stdout and stderr captured and exits with its return value.
//! Use plain printf + return codes in the body: gtest assertions do not cross processes.
ChildOutcome run_in_child(const std::function<int()>& body);

}  // namespace punch::test
