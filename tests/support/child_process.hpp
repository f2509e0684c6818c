// Run a piece of a test in a forked child process (for hostile setups:
// seccomp filters, prctl, namespaces, setuid; they must not leak into the
// test binary).
#pragma once

#include <cstdio>
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

//! A child's exit code for "not permitted here" (the reason printed); EXPECT_CHILD_OK skips on it.
constexpr int kChildSkip = 77;

}  // namespace punch::test

//! In a child body: fails the child (return 1) when `cond` is false, printing
//! where, the condition, and an optional printf-style message.
#define CHILD_CHECK(cond, ...)                                           \
  do {                                                                   \
    if (!(cond)) {                                                       \
      std::printf("%s:%d: check failed: %s", __FILE__, __LINE__, #cond); \
      __VA_OPT__(std::printf("; "); std::printf(__VA_ARGS__);)           \
      std::printf("\n");                                                 \
      return 1;                                                          \
    }                                                                    \
  } while (0)

//! In a child body: fails the child when a Status/Result holds an error, printing it.
#define CHILD_OK(expr)                                                                          \
  do {                                                                                          \
    if (const auto& r_ = (expr); !r_) {                                                         \
      std::printf("%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, r_.error().describe().c_str()); \
      return 1;                                                                                 \
    }                                                                                           \
  } while (0)

//! In the test: the child passed (exit 0), or the test is skipped with the child's reason (kChildSkip).
#define EXPECT_CHILD_OK(outcome)                                              \
  do {                                                                        \
    const auto& o_ = (outcome);                                               \
    if (o_.exit_code == ::punch::test::kChildSkip) GTEST_SKIP() << o_.output; \
    EXPECT_EQ(o_.exit_code, 0) << o_.describe();                              \
  } while (0)
