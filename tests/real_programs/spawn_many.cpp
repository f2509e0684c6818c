// spawn_many N PROGRAM [ARGS...] — posix_spawn PROGRAM N times, one after the
// other, and print how the children ended ("exited 0: N" and so on), for
// tests/real_programs/run.sh. Exit 0 when every child exited 0.
#include <spawn.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

extern char** environ;

int main(int argc, char** argv) {
  if (argc < 3) return std::fprintf(stderr, "usage: spawn_many N PROGRAM [ARGS...]\n"), 2;
  const int count = std::atoi(argv[1]);
  std::map<std::string, int> endings;
  for (int i = 0; i < count; ++i) {
    pid_t pid;
    if (int e = posix_spawn(&pid, argv[2], nullptr, nullptr, argv + 2, environ); e != 0) {
      ++endings["spawn error " + std::to_string(e)];
      continue;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
    }
    if (WIFEXITED(status))
      ++endings["exited " + std::to_string(WEXITSTATUS(status))];
    else
      ++endings["killed by signal " + std::to_string(WTERMSIG(status))];
  }
  for (const auto& [ending, n] : endings) std::printf("%s: %d\n", ending.c_str(), n);
  return endings.size() == 1 && endings.begin()->first == "exited 0" ? 0 : 1;
}
