// punch-probe: what this host lets punch do, as `key: value` lines.
// Exit status 0 when some write method works here, 1 otherwise.
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include <punch/runtime/probe.hpp>

using namespace punch::runtime;

namespace {

const char* yes_no(bool b) { return b ? "yes" : "no"; }

void line(const char* key, const std::string& value) { std::printf("%s: %s\n", key, value.c_str()); }

}  // namespace

int main() {
  const Capabilities caps = probe();
  utsname host{};
  ::uname(&host);
  const char* env = std::getenv("PUNCH_WRITE_METHOD");

  line("write_method", caps.auto_method ? std::string(to_string(*caps.auto_method)) : "none");
  line("proc_mem_write", std::string(to_string(caps.proc_mem_write)));
  if (caps.proc_mem_write != ProcMemState::kOk) line("proc_mem_detail", caps.proc_mem_detail);
  line("dual_map", yes_no(caps.dual_map_works));
  line("mprotect", yes_no(caps.mprotect_works));
  line("anonymous_exec", yes_no(caps.anonymous_exec_allowed));
  line("mdwe", yes_no(caps.mdwe));
  line("membarrier_sync_core", yes_no(caps.membarrier_sync_core));
  line("sync_method", std::string(to_string(caps.sync)));
  line("membarrier_serializes_caller", yes_no(membarrier_serializes_caller()));
  line("serialize_method", std::string(to_string(serialize_method())));
  line("kernel", std::string(host.release));
  line("uid", std::to_string(::getuid()));

  // What a program using CodeWriter::global() gets, honouring PUNCH_WRITE_METHOD.
  auto global = CodeWriter::global();
  line("punch_write_method_env", env ? env : "(unset: auto)");
  line("global_writer", global ? std::string(to_string((*global)->method())) : "error: " + global.error().describe());

  std::string conclusion;
  if (!caps.auto_method) {
    conclusion = "no write method works here; punch cannot emit code";
  } else if (*caps.auto_method == WriteMethod::kProcMem) {
    conclusion = "code pages stay read+execute; bytes go through /proc/self/mem";
    if (caps.mdwe) conclusion += " (MDWE is on: mprotect-based JITs fail here, punch does not)";
  } else {
    conclusion = "/proc/self/mem writes are " + std::string(to_string(caps.proc_mem_write)) + "; falling back to " +
                 std::string(to_string(*caps.auto_method));
  }
  if (!caps.membarrier_sync_core) conclusion += "; membarrier refused: every sync signals each thread";
  line("conclusion", conclusion);
  return caps.auto_method && global ? 0 : 1;
}
