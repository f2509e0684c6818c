// The few instructions minivm's JIT emits to be changed later (patch points),
// and the writes that change them while other threads run the code.
//
// Every patchable spot of the JIT goes through this file: an inline cache's
// shape id and slot offset (`mov r32, imm32`), a call site (`call rel32`), a
// guard (a 5-byte nop that becomes `jmp rel32` to a deopt exit) and a code
// version's entry (a guard whose target is the function's interpreter stub).
// Each is one instruction, so a change never needs the thread fix-up round.
#pragma once

#include <cstdint>
#include <span>

#include <asmjit/x86.h>

#include <punch/result.hpp>

namespace minivm::patch {

//! Extent of the code that holds a site (one code version).
struct Code {
  std::uintptr_t begin = 0, end = 0;
};

// Emitters: each returns a label bound at the patch point's first byte.
asmjit::Label emit_imm32(asmjit::x86::Assembler& a, asmjit::x86::Gp reg, std::uint32_t value);
asmjit::Label emit_call(asmjit::x86::Assembler& a, std::uint64_t target);
asmjit::Label emit_guard(asmjit::x86::Assembler& a);  // Passes through until tripped.
//! Whether the code at `site` is a call emit_call made that can be retargeted
//! (asmjit falls back to an indirect call when the target is out of reach).
bool is_call_site(std::uintptr_t site);

//! Changes the immediate of an emit_imm32 site from `expected` to `value`.
punch::Status set_imm32(Code code, std::uintptr_t site, std::uint32_t expected, std::uint32_t value);

struct Retarget {
  Code code;
  std::uintptr_t site;
  std::uintptr_t from, to;
};
//! Points every call site at its new target, as one batch.
punch::Status retarget_calls(std::span<const Retarget> sites);

struct Trip {
  Code code;
  std::uintptr_t site;
  std::uintptr_t exit;
};
//! Makes every guard jump to its exit, as one batch.
punch::Status trip_guards(std::span<const Trip> guards);

}  // namespace minivm::patch
