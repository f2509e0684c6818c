// The few instructions minivm's JIT emits to be changed later (patch points,
// punch/patcher/patch_point.hpp), and the changes the VM makes to them while
// other threads run the code.
//
// Every patchable spot of the JIT goes through this file: an inline cache's
// way (`mov r64, imm64`: shape id and slot offset), a call site (`call rel32`), a
// guard (a 5-byte nop that becomes `jmp rel32` to a deopt exit) and a code
// version's entry (a guard whose target is the function's interpreter stub).
// Each is one instruction, so a change never needs the thread fix-up round.
#pragma once

#include <cstdint>
#include <span>

#include <asmjit/x86.h>

#include <punch/patcher/patch_point.hpp>
#include <punch/result.hpp>

namespace minivm::patch {

using Mark = punch::patcher::PatchPointMark;

// Emitters: each returns the mark of one patch point.
inline Mark emit_imm64(asmjit::x86::Assembler& a, asmjit::x86::Gp reg, std::uint64_t value) {
  return punch::patcher::emit_imm64_point(a, reg, value);
}
inline Mark emit_call(asmjit::x86::Assembler& a, std::uintptr_t target) {
  return punch::patcher::emit_call_point(a, target);
}
//! Passes through until tripped.
inline Mark emit_guard(asmjit::x86::Assembler& a) { return punch::patcher::emit_guard_point(a); }
//! A function's first instruction, for invalidate_entry.
inline Mark emit_entry(asmjit::x86::Assembler& a) { return punch::patcher::emit_patchable_entry(a); }

//! The address `mark` became in `code` placed at `base`, checked.
punch::Result<std::uintptr_t> resolve(const Mark& mark, const asmjit::CodeHolder& code, std::uintptr_t base);

//! Changes the immediate of an emit_imm64 point from `expected` to `value`.
punch::Status set_imm64(std::uintptr_t site, std::uint64_t expected, std::uint64_t value);

struct Retarget {
  std::uintptr_t site;
  std::uintptr_t from, to;
};
//! Points every call site at its new target, as one batch.
punch::Status retarget_calls(std::span<const Retarget> sites);

struct Trip {
  std::uintptr_t site;
  std::uintptr_t exit;
};
//! Makes every guard jump to its exit, as one batch.
punch::Status trip_guards(std::span<const Trip> guards);

//! Later calls of the code at `function` (emitted with emit_entry) go to `stub`.
punch::Status invalidate_entry(std::uintptr_t function, std::uintptr_t stub);

}  // namespace minivm::patch
