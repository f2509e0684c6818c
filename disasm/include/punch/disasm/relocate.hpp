// punch::disasm relocation — make a run of instructions behave the same at another address.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include <punch/disasm/instruction.hpp>
#include <punch/result.hpp>

namespace punch::disasm {

//! Where one source instruction went.
struct OffsetMapping {
  std::uint32_t old_offset = 0;  //!< From the start of the source run.
  std::uint32_t new_offset = 0;  //!< From the start of the relocated bytes.
};

//! The relocated run.
struct Relocation {
  std::uintptr_t address = 0;          //!< Where the bytes are meant to live.
  std::vector<std::uint8_t> bytes;     //!< Equivalent code, ready to write at `address`.
  std::vector<OffsetMapping> offsets;  //!< One entry per source instruction, in order.
  std::uint32_t source_length = 0;     //!< Bytes of the source run.
};

struct RelocateOptions {
  //! A `call` may be the last instruction of the run (a thread returning from
  //! it lands after the run, which the caller's jump-back covers). A call
  //! elsewhere in the run is always refused: a thread could return into its middle.
  bool allow_final_call = true;
  //! The final call (direct, or indirect through a register or memory not
  //! addressed by rsp) becomes: push the ORIGINAL return address (the end of
  //! the call in the source), then jump where the call goes. The callee sees
  //! the return address it would see in place (`__builtin_return_address`,
  //! get-pc thunks) and returns straight after the source run; no return
  //! address ever points into the copy. Not for threads with a shadow stack
  //! (the callee's `ret` would not match it).
  bool final_call_as_jump = false;
};

//! Relocates every instruction of `source` to `destination`:
//! RIP-relative operands re-encoded; rel8/rel32 jmp/jcc/call retargeted, rel8
//! widened when needed; jrcxz/loop* rewritten as equivalent short sequences;
//! branches into the run kept internal; targets out of ±2 GiB reach use an
//! absolute form that touches no register and no stack (jmp/call [rip+0] +
//! address), or the call fails with kOutOfRange when none exists (RIP-relative
//! data out of reach). A RIP-relative operand that reads bytes of the run
//! itself reads the same bytes of the copy (the run works as a unit at any
//! address, e.g. `jmp [rip+2]; movabs rax, imm64`). syscall, and anything
//! Zydis rejects, are refused with the reason and address. Does not append a
//! jump back.
Result<Relocation> relocate(CodeSpan source, std::uintptr_t destination, RelocateOptions options = {});

//! An upper bound on relocate(source, any destination, any options).bytes.size().
Result<std::size_t> relocated_size_bound(CodeSpan source);

//! Whether `insn` reads RIP-relative data outside [run_start, run_end): data
//! inside the run moves with its copy, so only outside data limits where a copy may lie.
inline bool reads_data_outside(const Instruction& insn, std::uintptr_t run_start, std::uintptr_t run_end) {
  return insn.has_memory_target && (insn.memory_target < run_start || insn.memory_target >= run_end);
}

//! Whether `insn` calls a function that returns to it: any call but a call to
//! the next instruction (the get-pc idiom, relocated as a push).
inline bool calls_out(const Instruction& insn) {
  if (insn.flow == Flow::kIndirectCall) return true;
  return insn.flow == Flow::kCall && !(insn.has_branch_target && insn.branch_target == insn.end());
}

//! The one rule for calls in a run of instructions that a patch replaces or
//! copies (a site's old or new code, a hook's stolen bytes, a relocated run):
//! a call (calls_out) may only be the run's last instruction, for a thread
//! returning from a call earlier in the run would land inside it. Refuses
//! `insn`, an instruction of `code` in a run that goes on to `run_end`, with
//! kCannotRelocate naming the call when it breaks the rule.
Status check_call_is_last(CodeSpan code, const Instruction& insn, std::uintptr_t run_end);

//! `jmp rel32` from `from` to `to` (5 bytes), or kOutOfRange.
Result<std::vector<std::uint8_t>> encode_jmp_rel32(std::uintptr_t from, std::uintptr_t to);

//! The same 5 bytes without allocating (an out-of-line copy per site needs
//! one), or nullopt when `to` is out of rel32 reach.
std::optional<std::array<std::uint8_t, 5>> jmp_rel32_bytes(std::uintptr_t from, std::uintptr_t to);

//! `jmp [rip+0]; .quad to` (14 bytes): reaches anywhere, touches no register or stack.
std::vector<std::uint8_t> encode_jmp_absolute(std::uintptr_t to);

}  // namespace punch::disasm
