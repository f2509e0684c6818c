// punch::patcher hook registry — every hooked target's chain, behind one lock.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include <punch/patcher/hook.hpp>
#include <punch/result.hpp>
#include <punch/runtime/threads.hpp>

#include "hook_trampoline.hpp"

namespace punch::patcher::detail {

//! How many threads are inside the call a generated detour makes (it counts
//! them itself): while not zero, its code and the chain's are in use, however
//! deep the thread is in the functions the call reached.
using InFlight = std::shared_ptr<const std::atomic<std::uint64_t>>;

//! A detour punch generated (a mid hook's stub), handed to the registry with
//! its hook: freed on a failed install, retired with the hook on removal.
struct GeneratedDetour {
  CodeBlock code;                           //!< The detour itself (the hook's `detour` address).
  std::vector<runtime::CodeRange> callees;  //!< Code it calls and returns from (the user's function, if known).
  InFlight in_flight;                       //!< Threads inside its call.
};

//! Installs a hook (wrapping the target's existing hooks); returns its id.
//! `original`, when not null, receives the hook's trampoline (release store)
//! before any call can reach the detour, and its old value back on failure.
//! A hook installed disabled is refused when enabling it would be.
//! `generated`, when given, is owned by the registry from this call on (even when it fails).
Result<std::uint64_t> registry_install(std::uintptr_t target, std::uintptr_t detour, const HookOptions& options,
                                       void** original = nullptr,
                                       std::optional<GeneratedDetour> generated = std::nullopt);
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
