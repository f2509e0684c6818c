// mdwe_exec PROGRAM [ARGS...] — turn on PR_SET_MDWE (no memory may become
// writable and executable; inherited across execve) and exec PROGRAM, for
// tests/real_programs/run.sh. Exit 77 when the kernel has no MDWE.
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#define PR_MDWE_REFUSE_EXEC_GAIN 1
#endif

int main(int argc, char** argv) {
  if (argc < 2) return std::fprintf(stderr, "usage: mdwe_exec PROGRAM [ARGS...]\n"), 2;
  if (prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0L, 0L, 0L) != 0)
    return std::fprintf(stderr, "mdwe_exec: PR_SET_MDWE: %s\n", std::strerror(errno)), 77;
  execvp(argv[1], argv + 1);
  std::fprintf(stderr, "mdwe_exec: %s: %s\n", argv[1], std::strerror(errno));
  return 127;
}
