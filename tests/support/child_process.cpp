#include "child_process.hpp"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace punch::test {

std::string ChildOutcome::describe() const {
  std::string head = signal ? "killed by signal " + std::to_string(signal) : "exit " + std::to_string(exit_code);
  return head + "; output:\n" + output;
}

ChildOutcome run_in_child(const std::function<int()>& body) {
  ChildOutcome outcome;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    outcome.output = std::string("pipe2: ") + std::strerror(errno);
    return outcome;
  }
  std::fflush(nullptr);  // Nothing buffered in the parent gets written twice.
  pid_t pid = ::fork();
  if (pid < 0) {
    outcome.output = std::string("fork: ") + std::strerror(errno);
    ::close(fds[0]);
    ::close(fds[1]);
    return outcome;
  }
  if (pid == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    ::dup2(fds[1], STDERR_FILENO);
    int code = body();
    std::fflush(nullptr);
    ::_exit(code);  // No atexit handlers or static destructors of the parent's state.
  }
  ::close(fds[1]);
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    outcome.output.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) outcome.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) outcome.signal = WTERMSIG(status);
  return outcome;
}

}  // namespace punch::test
