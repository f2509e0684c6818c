// Code versions: compiling a function, pointing every caller at the new code,
// retiring the old version, and freeing it once no thread can be in it.
#include <algorithm>
#include <mutex>

#include "jit_compiler.hpp"
#include "patch_sites.hpp"
#include "vm.hpp"

namespace minivm {

punch::Status Vm::compile(FunctionState& f) {
  std::lock_guard lock(patch_mutex_);
  return compile_locked(f);
}

punch::Status Vm::compile_locked(FunctionState& f) {
  auto compiled = compile_function(*this, f, jit_);
  if (!compiled) return tl::unexpected(std::move(compiled).error());
  CodeVersion* version = compiled->get();
  versions_.push_back(std::move(*compiled));
  register_sites_locked(*version);
  counters_.compiles.fetch_add(1, std::memory_order_relaxed);

  CodeVersion* old = f.current;
  f.current = version;
  f.entry.store(reinterpret_cast<void*>(version->begin), std::memory_order_release);
  if (auto ok = point_callers_at(f, version->begin); !ok) return ok;  // The old version stays live: still correct.
  if (old) retire_locked(*old, false);
  return {};
}

punch::Status Vm::invalidate(FunctionState& f) {
  std::lock_guard lock(patch_mutex_);
  return f.current ? invalidate_locked(*f.current) : punch::Status{};
}

// Trips every guard of the version, its entry's included, in one batch; then
// the function runs in the interpreter until it is hot again.
punch::Status Vm::invalidate_locked(CodeVersion& version) {
  if (version.retired) return {};
  FunctionState& f = *version.function;
  std::vector<patch::Trip> trips{{version.begin, f.stub}};
  for (auto& guard : version.guards)
    if (!guard->tripped) trips.push_back({guard->site, guard->exit});
  if (auto ok = patch::trip_guards(trips); !ok) return ok;
  for (auto& guard : version.guards) guard->tripped = true;
  counters_.guards_tripped.fetch_add(trips.size() - 1, std::memory_order_relaxed);
  counters_.entries_invalidated.fetch_add(1, std::memory_order_relaxed);
  if (f.current == &version) {
    f.current = nullptr;
    f.entry.store(nullptr, std::memory_order_release);
    f.calls.store(0, std::memory_order_relaxed);
    if (auto ok = point_callers_at(f, f.stub); !ok) return ok;  // Not retired: callers may still enter it.
  }
  retire_locked(version, true);
  return {};
}

void Vm::register_sites_locked(CodeVersion& version) {
  for (auto& call : version.calls) call->callee->callers.push_back(call.get());
  for (auto& guard : version.guards)
    if (guard->global >= 0) globals_[guard->global].guards.push_back(guard.get());
}

punch::Status Vm::point_callers_at(FunctionState& f, std::uintptr_t target) {
  std::vector<patch::Retarget> batch;
  for (CallSite* call : f.callers)
    if (call->target != target) batch.push_back({call->site, call->target, target});
  if (auto ok = patch::retarget_calls(batch); !ok) return ok;
  for (CallSite* call : f.callers) call->target = target;
  counters_.call_retargets.fetch_add(batch.size(), std::memory_order_relaxed);
  return {};
}

// The old version stops being reachable: no call site of live code points at
// it, nor does the function's entry; a thread that still enters it through a
// pointer it loaded earlier meets the tripped entry guard and goes to the
// interpreter stub. Threads inside it finish there (their calls and guards
// still work); reclaim() frees it once none can be.
void Vm::retire_locked(CodeVersion& version, bool entry_tripped) {
  for (auto& call : version.calls) std::erase(call->callee->callers, call.get());
  for (auto& guard : version.guards)
    if (guard->global >= 0) std::erase(globals_[guard->global].guards, guard.get());
  if (!entry_tripped && patch::invalidate_entry(version.begin, version.function->stub))
    counters_.entries_invalidated.fetch_add(1, std::memory_order_relaxed);
  version.retired = true;
  version.retired_epoch = epoch_.fetch_add(1) + 1;
}

std::size_t Vm::reclaim() {
  std::lock_guard lock(patch_mutex_);
  // The oldest epoch a thread still inside a run entered at.
  std::uint64_t oldest = UINT64_MAX;
  {
    std::lock_guard threads(threads_mutex_);
    for (ThreadState* t : threads_)
      if (t->running.load()) oldest = std::min(oldest, t->entered_epoch.load());
  }
  std::size_t left = 0;
  bool any = false;
  std::erase_if(versions_, [&](const std::unique_ptr<CodeVersion>& v) {
    if (!v->retired) return false;
    if (v->retired_epoch > oldest || !punch::patcher::retire_code(jit_, reinterpret_cast<void*>(v->begin)))
      return ++left, false;
    any = true;
    return true;
  });
  // No run can be inside these versions (not even deeper in its stack):
  // punch frees them once it has also seen no thread executing there.
  if (any) {
    if (auto stats = punch::patcher::free_retired_code())
      counters_.versions_freed.fetch_add(stats->freed, std::memory_order_relaxed);
  }
  return left;
}

}  // namespace minivm
