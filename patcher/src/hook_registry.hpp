// punch::patcher hook registry — every hooked target's chain, behind one lock.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

#include <punch/patcher/hook.hpp>
#include <punch/result.hpp>

namespace punch::patcher::detail {

//! Installs a hook (wrapping the target's existing hooks); returns its id.
//! `original`, when not null, receives the hook's trampoline (release store)
//! before any call can reach the detour, and its old value back on failure.
//! A hook installed disabled is refused when enabling it would be.
Result<std::uint64_t> registry_install(std::uintptr_t target, std::uintptr_t detour, const HookOptions& options,
                                       void** original = nullptr);
//! Enables or disables hook `id` with one transaction.
Status registry_set_enabled(std::uint64_t id, bool enabled);
//! Removes hook `id` with one transaction.
Status registry_remove(std::uint64_t id);
//! Whether hook `id` is enabled.
bool registry_enabled(std::uint64_t id);
//! What hook `id` looks like (empty info for an unknown id).
HookInfo registry_info(std::uint64_t id);
//! Frees retired hook code no thread is executing.
Result<std::size_t> registry_release_retired(std::chrono::milliseconds timeout);

}  // namespace punch::patcher::detail
