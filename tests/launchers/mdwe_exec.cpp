// mdwe_exec: runs a program with PR_SET_MDWE (PR_MDWE_REFUSE_EXEC_GAIN) in
// force, as systemd's MemoryDenyWriteExecute= does. MDWE is inherited across
// fork and exec and cannot be turned off again. Usage: mdwe_exec PROGRAM [ARGS...]
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sys/prctl.h>
#include <unistd.h>

#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#endif
#ifndef PR_MDWE_REFUSE_EXEC_GAIN
#define PR_MDWE_REFUSE_EXEC_GAIN 1UL
#endif

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: mdwe_exec PROGRAM [ARGS...]\n");
    return 2;
  }
  if (prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0L, 0L, 0L) != 0) {
    // A run that claims MDWE must have it: fail rather than run without.
    std::fprintf(stderr, "mdwe_exec: PR_SET_MDWE failed (needs Linux 6.3): %s\n", std::strerror(errno));
    return 2;
  }
  execvp(argv[1], argv + 1);
  std::fprintf(stderr, "mdwe_exec: cannot run %s: %s\n", argv[1], std::strerror(errno));
  return 127;
}
