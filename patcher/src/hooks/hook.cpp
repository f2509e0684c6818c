// punch::patcher::Hook — the handle; the work happens in the registry.
#include <punch/patcher/hook.hpp>

#include <utility>

#include "hook_registry.hpp"

namespace punch::patcher {

std::string_view to_string(HookEntryKind kind) noexcept {
  switch (kind) {
    case HookEntryKind::kPatchableEntry: return "patchable-entry";
    case HookEntryKind::kStolenRel32: return "stolen-rel32";
    case HookEntryKind::kStolenAbsolute: return "stolen-absolute";
  }
  return "unknown";
}

Hook::~Hook() {
  if (installed()) (void)remove();  // Documented: errors are dropped here.
}

Hook::Hook(Hook&& other) noexcept : id_(std::exchange(other.id_, 0)) {}

Hook& Hook::operator=(Hook&& other) noexcept {
  if (this != &other) {
    if (installed()) (void)remove();
    id_ = std::exchange(other.id_, 0);
  }
  return *this;
}

Result<Hook> Hook::install(void* target, void* detour, HookOptions options) {
  return install(target, detour, nullptr, options);
}

Result<Hook> Hook::install(void* target, void* detour, void** original, HookOptions options) {
  auto id = detail::registry_install(reinterpret_cast<std::uintptr_t>(target), reinterpret_cast<std::uintptr_t>(detour),
                                     options, original);
  if (!id) {  // Name the target: the failing step may be about other memory (a trampoline).
    Error e = std::move(id).error();
    const auto address = reinterpret_cast<std::uintptr_t>(target);
    if (e.address == 0) e.address = address;
    if (e.message.rfind(at(target), 0) == 0) return fail(std::move(e));
    return fail(std::move(e).with_context("hooking " + at(target)));
  }
  return Hook(*id);
}

Result<Hook> Hook::install(const SymbolRef& symbol, void* detour, HookOptions options) {
  return install(symbol, detour, nullptr, options);
}

Result<Hook> Hook::install(const SymbolRef& symbol, void* detour, void** original, HookOptions options) {
  auto target = resolve_symbol(symbol);
  if (!target) return tl::unexpected<Error>(std::move(target).error());
  return install(*target, detour, original, options);
}

Status Hook::enable() {
  if (!installed()) return fail(ErrorCode::kNotOwned, "enable: the hook handle is empty");
  return detail::registry_set_enabled(id_, true);
}

Status Hook::disable() {
  if (!installed()) return fail(ErrorCode::kNotOwned, "disable: the hook handle is empty");
  return detail::registry_set_enabled(id_, false);
}

Status Hook::remove() {
  if (!installed()) return fail(ErrorCode::kNotOwned, "remove: the hook handle is empty");
  PUNCH_TRY(detail::registry_remove(id_));
  id_ = 0;
  return {};
}

bool Hook::enabled() const noexcept { return installed() && detail::registry_enabled(id_); }

void* Hook::trampoline() const noexcept {
  return installed() ? reinterpret_cast<void*>(detail::registry_info(id_).trampoline) : nullptr;
}

HookInfo Hook::info() const noexcept { return installed() ? detail::registry_info(id_) : HookInfo{}; }

Result<std::size_t> release_retired_hook_code(std::chrono::milliseconds timeout) {
  return detail::registry_release_retired(timeout);
}

}  // namespace punch::patcher
