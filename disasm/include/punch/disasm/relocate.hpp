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
};

//! Relocates every instruction of `source` to `destination`:
//! RIP-relative operands re-encoded; rel8/rel32 jmp/jcc/call retargeted, rel8
//! widened when needed; jrcxz/loop* rewritten as equivalent short sequences;
//! branches into the run kept internal; targets out of ±2 GiB reach use an
//! absolute form that touches no register and no stack (jmp/call [rip+0] +
//! address), or the call fails with kOutOfRange when none exists (RIP-relative
//! data out of reach). syscall, and anything Zydis rejects, are refused with
//! the reason and address. Does not append a jump back.
Result<Relocation> relocate(CodeSpan source, std::uintptr_t destination, RelocateOptions options = {});

//! An upper bound on relocate(source, any destination).bytes.size().
Result<std::size_t> relocated_size_bound(CodeSpan source);

//! `jmp rel32` from `from` to `to` (5 bytes), or kOutOfRange.
Result<std::vector<std::uint8_t>> encode_jmp_rel32(std::uintptr_t from, std::uintptr_t to);

//! The same 5 bytes without allocating (an out-of-line copy per site needs
//! one), or nullopt when `to` is out of rel32 reach.
std::optional<std::array<std::uint8_t, 5>> jmp_rel32_bytes(std::uintptr_t from, std::uintptr_t to);

//! `jmp [rip+0]; .quad to` (14 bytes): reaches anywhere, touches no register or stack.
std::vector<std::uint8_t> encode_jmp_absolute(std::uintptr_t to);

}  // namespace punch::disasm
