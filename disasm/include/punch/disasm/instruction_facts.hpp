// punch::disasm instruction facts — what an instruction, or a run of them, does.
//
// The patcher decides where code may run, what a copy of it needs and how a
// thread can leave it from these facts alone; they live here, next to the
// decoder that establishes them, so every caller asks the same question the
// same way.
#pragma once

#include <span>

#include <punch/disasm/instruction.hpp>

namespace punch::disasm {

//! Whether control can continue to the next instruction (not a jmp, an
//! indirect jmp, a return or a trap).
bool falls_through(const Instruction& insn) noexcept;

//! Whether the instruction is a nop of any width (padding that is not int3).
bool is_nop(const Instruction& insn) noexcept;

//! Whether the instruction means the same at any address, so a copy of it is
//! its bytes: no relative field, no RIP-relative operand, no call (its return
//! address would point into the copy) and no system call.
bool runs_anywhere(const Instruction& insn) noexcept;

//! For a run of whole instructions `insns` covering `run`: whether a thread
//! can be strictly inside it. Not when its first instruction never falls
//! through into the rest (a return, or a jmp that does not land inside the
//! run): the rest is unreachable, given no branch from outside lands inside.
bool interior_reachable(CodeSpan run, std::span<const Instruction> insns) noexcept;

//! Whether code copied from `run` (decoded as `insns`) can leave other than by
//! falling through its end: a direct branch or call outside the run, or any
//! indirect one. A return goes back to a caller and does not count.
bool may_leave(CodeSpan run, std::span<const Instruction> insns) noexcept;

}  // namespace punch::disasm
