#include "patch_sites.hpp"

namespace minivm::patch {

namespace pp = punch::patcher;

punch::Result<std::uintptr_t> resolve(const Mark& mark, const asmjit::CodeHolder& code, std::uintptr_t base) {
  auto point = pp::resolve(mark, code, reinterpret_cast<const void*>(base));
  if (!point) return tl::unexpected(std::move(point).error());
  return point->address;
}

punch::Status set_imm64(std::uintptr_t site, std::uint64_t expected, std::uint64_t value) {
  return pp::set_imm64({site, pp::PatchPointKind::kImm64}, value, expected);
}

punch::Status retarget_calls(std::span<const Retarget> sites) {
  pp::PatchPointBatch batch;
  for (const Retarget& r : sites)
    if (auto ok = batch.set_call_target({r.site, pp::PatchPointKind::kCall}, r.to, r.from); !ok) return ok;
  return batch.commit();
}

punch::Status trip_guards(std::span<const Trip> guards) {
  pp::PatchPointBatch batch;
  for (const Trip& g : guards)
    if (auto ok = batch.enable_guard({g.site, pp::PatchPointKind::kGuard}, g.exit); !ok) return ok;
  return batch.commit();
}

punch::Status invalidate_entry(std::uintptr_t function, std::uintptr_t stub) {
  return pp::invalidate_entry(function, stub);
}

}  // namespace minivm::patch
