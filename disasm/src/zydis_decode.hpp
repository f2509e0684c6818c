// Internal: one Zydis decode of the instruction at an address of a CodeSpan,
// shared by the decoder, the validator and the relocator.
#pragma once

#include <cstdint>

#include <Zydis/Zydis.h>

#include <punch/disasm/instruction.hpp>
#include <punch/result.hpp>

namespace punch::disasm::detail {

//! Zydis's full view of one instruction (kept for the relocator, which needs raw fields).
struct ZydisView {
  ZydisDecodedInstruction insn;
  ZydisDecodedOperand operands[ZYDIS_MAX_OPERAND_COUNT];
};

//! Decodes the instruction at `address` into `view` and `out`, or names the
//! address and the reason (outside the span, truncated, invalid).
Status decode_into(CodeSpan code, std::uintptr_t address, ZydisView& view, Instruction& out);

//! "0f 0b c3" for messages: up to `max` bytes of `code` from `address`.
std::string hex_bytes(CodeSpan code, std::uintptr_t address, std::size_t max = 15);

}  // namespace punch::disasm::detail
