#include <punch/runtime/probe.hpp>

#include <sys/mman.h>

#include "mdwe.hpp"
#include "placement.hpp"

namespace punch::runtime {

std::string_view to_string(ProcMemState state) noexcept {
  switch (state) {
    case ProcMemState::kOk: return "ok";
    case ProcMemState::kBlocked: return "blocked";
    case ProcMemState::kAbsent: return "absent";
  }
  return "unknown";
}

Status probe_method(WriteMethod method) {
  auto writer = CodeWriter::create(method);  // create() maps a test page, writes and reads back.
  if (!writer) return tl::unexpected(std::move(writer).error());
  return {};
}

Capabilities probe() {
  Capabilities caps;
  if (Status proc_mem = probe_method(WriteMethod::kProcMem); proc_mem) {
    caps.proc_mem_write = ProcMemState::kOk;
    caps.proc_mem_detail = "ok";
  } else {
    // The file opens (or not) before any write is tried: kUnsupported means it would not open.
    caps.proc_mem_write =
        proc_mem.error().code == ErrorCode::kUnsupported ? ProcMemState::kAbsent : ProcMemState::kBlocked;
    caps.proc_mem_detail = proc_mem.error().message;
  }
  caps.dual_map_works = probe_method(WriteMethod::kDualMap).has_value();
  caps.mprotect_works = probe_method(WriteMethod::kMprotect).has_value();

  const std::size_t page = detail::page_size();
  void* p = ::mmap(nullptr, page, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  caps.anonymous_exec_allowed = p != MAP_FAILED;
  if (p != MAP_FAILED) ::munmap(p, page);

  caps.sync = sync_method();
  caps.membarrier_sync_core = caps.sync == SyncMethod::kMembarrier;
  caps.mdwe = detail::mdwe_in_force();
  if (caps.proc_mem_write == ProcMemState::kOk)
    caps.auto_method = WriteMethod::kProcMem;
  else if (caps.dual_map_works)
    caps.auto_method = WriteMethod::kDualMap;
  else if (caps.mprotect_works)
    caps.auto_method = WriteMethod::kMprotect;
  return caps;
}

}  // namespace punch::runtime
