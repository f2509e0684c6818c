// The patcher's process-wide locks in punch's lock order (see LockRank in
// runtime/internal/punch/runtime/fork_safe_mutex.hpp for the bands).
#pragma once

#include <punch/runtime/fork_safe_mutex.hpp>

namespace punch::patcher::detail {

inline constexpr runtime::LockRank kRetiredCodeRank{
    0};  // Retired JIT code and the patch point changes checked against it; outermost.
inline constexpr runtime::LockRank kHooksRank{1};         // The hook registry.
inline constexpr runtime::LockRank kTransactionsRank{2};  // Commits and reverts of live transactions.
inline constexpr runtime::LockRank kTrapHandlerRank{3};   // Installing the trap handler.
inline constexpr runtime::LockRank kBranchIndexRank{20};  // The per-object index of direct branch targets; a leaf.

}  // namespace punch::patcher::detail
