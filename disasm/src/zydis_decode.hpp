// Internal: one Zydis decode of the instruction at an address of a CodeSpan,
// shared by the decoder, the validator and the relocator.
#pragma once

#include <cstdint>

#include <Zydis/Zydis.h>

#include <punch/disasm/instruction.hpp>
#include <punch/result.hpp>

namespace punch::disasm::detail {

//! Zydis's view of one instruction, without operands (kept for the relocator,
//! which needs raw fields: prefixes, opcode, address width).
struct ZydisView {
  ZydisDecodedInstruction insn;
};

//! Zydis in its minimal mode (no operands, no flags): the decoder of decode_into
//! and of the branch sweep.
const ZydisDecoder& minimal_decoder();

//! Decodes the instruction at `address` into `view` and `out`, or names the
//! address and the reason (outside the span, truncated, invalid). Zydis's
//! minimal mode decodes it; only when the ModRM byte can encode a RIP-relative
//! operand is it decoded again in full, with its operands: most instructions
//! need no operand decoding, which is a third of Zydis's work. `view` holds
//! the raw fields either way (prefixes, opcode, address width).
Status decode_into(CodeSpan code, std::uintptr_t address, ZydisView& view, Instruction& out);

//! "0f 0b c3" for messages: up to `max` bytes of `code` from `address`.
std::string hex_bytes(CodeSpan code, std::uintptr_t address, std::size_t max = 15);

}  // namespace punch::disasm::detail
