// punch::runtime::probe — what this host lets punch do, found by trying, never assumed.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <punch/result.hpp>
#include <punch/runtime/code_writer.hpp>
#include <punch/runtime/sync.hpp>

namespace punch::runtime {

//! The state of /proc/self/mem writes on this host.
enum class ProcMemState {
  kOk,       //!< A real write and read-back succeeded.
  kBlocked,  //!< The file opens but writes fail with EIO (proc_mem.force_override=never|ptrace).
  kAbsent,   //!< The file is missing or cannot be opened.
};

std::string_view to_string(ProcMemState state) noexcept;

//! What the probe found. Each method is tried for real (map a test R+X page, write, read back).
struct Capabilities {
  ProcMemState proc_mem_write = ProcMemState::kAbsent;
  std::string proc_mem_detail;  //!< errno text or "ok".
  bool dual_map_works = false;
  bool mprotect_works = false;             //!< false under MDWE (mprotect may not add PROT_EXEC).
  bool anonymous_exec_allowed = false;     //!< mmap(PROT_READ|PROT_EXEC, MAP_ANONYMOUS) succeeds.
  bool membarrier_sync_core = false;       //!< membarrier SYNC_CORE registers and runs.
  bool mdwe = false;                       //!< PR_GET_MDWE reports PR_MDWE_REFUSE_EXEC_GAIN.
  std::optional<WriteMethod> auto_method;  //!< What `auto` picks; nullopt when nothing works.
  SyncMethod sync = SyncMethod::kSignals;  //!< What sync_all_threads uses.
};

//! Probes the host (cheap enough to call once at start-up; results are not cached).
Capabilities probe();

//! Whether `method` works on this host, with the reason when it does not.
Status probe_method(WriteMethod method);

}  // namespace punch::runtime
