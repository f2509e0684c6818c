// punch::patcher hook planner — which bytes at a function's entry a hook may replace, and why.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include <punch/disasm/instruction.hpp>
#include <punch/disasm/validate.hpp>
#include <punch/patcher/hook.hpp>
#include <punch/result.hpp>

namespace punch::patcher::detail {

//! The bytes a hook replaces at a function's entry.
struct EntryPlan {
  std::uintptr_t target = 0;  //!< The function.
  std::uintptr_t entry = 0;   //!< Where the jump goes: target, or after a leading endbr64.
  bool endbr64 = false;       //!< The function begins with endbr64 (kept in place).
  HookEntryKind kind = HookEntryKind::kStolenRel32;
  std::vector<std::uint8_t> original;             //!< The bytes at [entry, entry + original.size()).
  std::vector<disasm::Instruction> instructions;  //!< The instructions of those bytes (stolen or pad).
  bool ends_in_call = false;                      //!< The last stolen instruction calls a function (disasm::calls_out).
  disasm::FunctionExtent extent{};                //!< The function's extent (symbol, caller, or the pad alone).
  std::vector<std::uintptr_t> data_targets;  //!< RIP-relative data the stolen code reads (must stay in rel32 reach).

  std::size_t size() const noexcept { return original.size(); }
  std::uintptr_t resume() const noexcept { return entry + original.size(); }  //!< Where the original continues.
};

//! Bytes the jump needs: 5 for jmp rel32, 16 for the validated absolute form.
inline constexpr std::size_t kRel32JumpSize = 5;
inline constexpr std::size_t kAbsoluteEntrySize = 16;

//! Finds a patchable entry pad at `target` (after endbr64): a run of nops of at
//! least 5 bytes. Returns the plan, or kUnprovable when there is none.
Result<EntryPlan> plan_patchable_entry(std::uintptr_t target);

//! What the stolen-bytes planner may assume.
struct StealPolicy {
  std::optional<disasm::FunctionExtent> function;  //!< The extent, when no ELF symbol gives it.
  bool allow_unprovable = false;                   //!< Accept functions with indirect jumps.
};

//! Chooses the instructions to steal so that at least `min_bytes` are replaced,
//! refusing (with the address and reason) whatever a hook cannot do safely.
//! Reads memory only through safe_read; changes nothing.
Result<EntryPlan> plan_stolen_entry(std::uintptr_t target, std::size_t min_bytes, const StealPolicy& policy = {});

}  // namespace punch::patcher::detail
