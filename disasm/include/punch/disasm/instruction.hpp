// punch::disasm — decoding x86-64 instructions into plain facts.
//
// disasm/ depends on Zydis alone. It takes bytes plus the address they live
// at and returns facts, errors or new bytes; it never reads or writes memory
// itself (callers read code with runtime::safe_read).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <punch/result.hpp>

namespace punch::disasm {

//! Bytes and the address where they live (or will live).
struct CodeSpan {
  std::uintptr_t address = 0;
  std::span<const std::uint8_t> bytes;

  std::uintptr_t end() const noexcept { return address + bytes.size(); }
  bool contains(std::uintptr_t a) const noexcept { return a >= address && a < end(); }
};

//! How an instruction affects control flow.
enum class Flow {
  kNone,          //!< Falls through.
  kJump,          //!< jmp rel8/rel32.
  kCondJump,      //!< jcc rel8/rel32.
  kShortOnly,     //!< jrcxz/jecxz/loop/loope/loopne: rel8 only, no rel32 form.
  kCall,          //!< call rel32.
  kIndirectJump,  //!< jmp r/m (jump tables, tail calls through pointers).
  kIndirectCall,  //!< call r/m.
  kReturn,        //!< ret/iret.
  kSyscall,       //!< syscall/sysenter/int N.
  kTrap,          //!< int3, ud2, hlt and other instructions that stop the thread.
};

//! One decoded instruction: plain data.
struct Instruction {
  std::uintptr_t address = 0;
  std::uint8_t length = 0;
  Flow flow = Flow::kNone;
  bool has_branch_target = false;  //!< A direct relative branch (kJump, kCondJump, kShortOnly, kCall).
  std::uintptr_t branch_target = 0;
  bool has_memory_target = false;    //!< A RIP-relative memory operand (any encoding: legacy, VEX, EVEX).
  std::uintptr_t memory_target = 0;  //!< Its absolute address.
  std::uint8_t rel_offset = 0;       //!< Offset of the relative field (branch immediate or RIP displacement).
  std::uint8_t rel_size = 0;         //!< 0 when none, else 1 or 4 bytes.
  std::uint8_t imm_offset = 0;       //!< Offset of the first immediate that is not relative.
  std::uint8_t imm_size = 0;         //!< Its size in bytes, 0 when none.
  bool is_padding = false;           //!< nop (any form) or int3.
  bool is_endbr64 = false;
  bool is_mov = false;  //!< A mov: its immediate, if any, is a value that changes nothing else.

  std::uintptr_t end() const noexcept { return address + length; }
};

//! Decodes the instruction at `address` (which must lie inside `code`).
//! Errors: address outside the span, truncated or invalid bytes — each naming the address.
Result<Instruction> decode(CodeSpan code, std::uintptr_t address);

//! Decodes `code` from its first byte to its end; the span must end on an instruction boundary.
Result<std::vector<Instruction>> decode_all(CodeSpan code);

//! Intel-syntax text of the instruction at `address`, for messages ("mov rax, [rip+0x10]").
std::string format(CodeSpan code, std::uintptr_t address);

//! A move of a constant into a general register: what a JIT patches in an
//! inline cache or a constant slot.
struct ImmediateLoad {
  std::uint8_t reg = 0;     //!< x86 register number: 0 rax, 1 rcx, ... 7 rdi, 8-15 r8-r15 (never 4, rsp).
  std::uint64_t value = 0;  //!< The whole 64-bit register afterwards.
};

//! Whether `bytes` are exactly one `mov r32, imm32` / `mov r64, imm64`
//! (B8+r) or `mov r32/r64, imm32` with a register operand (C7 /0, mod 11),
//! with no prefix but REX; rsp is left out. A 32-bit move zero-extends and
//! REX.W C7 sign-extends, as the CPU does.
std::optional<ImmediateLoad> immediate_load(std::span<const std::uint8_t> bytes);

}  // namespace punch::disasm
