// decode, decode_all and format: Zydis instructions turned into plain facts.
#include <punch/disasm/instruction.hpp>

#include <cstdio>

#include "zydis_decode.hpp"

namespace punch::disasm {
namespace {

const ZydisDecoder& decoder() {
  static const ZydisDecoder instance = [] {
    ZydisDecoder d;
    ZydisDecoderInit(&d, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
    return d;
  }();
  return instance;
}

Flow classify(const ZydisDecodedInstruction& insn, bool relative_branch) {
  switch (insn.mnemonic) {
    case ZYDIS_MNEMONIC_JRCXZ:
    case ZYDIS_MNEMONIC_JECXZ:
    case ZYDIS_MNEMONIC_JCXZ:
    case ZYDIS_MNEMONIC_LOOP:
    case ZYDIS_MNEMONIC_LOOPE:
    case ZYDIS_MNEMONIC_LOOPNE: return Flow::kShortOnly;
    case ZYDIS_MNEMONIC_SYSCALL:
    case ZYDIS_MNEMONIC_SYSENTER:
    case ZYDIS_MNEMONIC_INT:
    case ZYDIS_MNEMONIC_INT1:
    case ZYDIS_MNEMONIC_INTO: return Flow::kSyscall;
    case ZYDIS_MNEMONIC_XBEGIN:
      // Falls through; its relative operand is the abort handler, not a jcc
      // (Zydis files it under COND_BR). Relocation patches its rel32 in place.
      return Flow::kNone;
    case ZYDIS_MNEMONIC_INT3:
    case ZYDIS_MNEMONIC_UD0:
    case ZYDIS_MNEMONIC_UD1:
    case ZYDIS_MNEMONIC_UD2:
    case ZYDIS_MNEMONIC_HLT: return Flow::kTrap;
    default: break;
  }
  switch (insn.meta.category) {
    case ZYDIS_CATEGORY_UNCOND_BR: return relative_branch ? Flow::kJump : Flow::kIndirectJump;
    case ZYDIS_CATEGORY_COND_BR: return Flow::kCondJump;
    case ZYDIS_CATEGORY_CALL: return relative_branch ? Flow::kCall : Flow::kIndirectCall;
    case ZYDIS_CATEGORY_RET:
    case ZYDIS_CATEGORY_SYSRET: return Flow::kReturn;
    case ZYDIS_CATEGORY_SYSCALL: return Flow::kSyscall;
    default: return Flow::kNone;
  }
}

}  // namespace

namespace detail {

// Zydis's minimal mode fills every field decode_into and the relocator read
// (length, mnemonic, category, address width, opcode, raw prefixes, ModRM,
// displacement, immediates; tests/disasm/zydis_minimal_mode_test.cpp)
// and skips the rest (flags, most attributes): validation, which decodes
// every instruction of a container, got ~10% faster. It cannot decode
// operands, so an instruction that may have a RIP-relative one is decoded
// again in full.
const ZydisDecoder& minimal_decoder() {
  static const ZydisDecoder instance = [] {
    ZydisDecoder d;
    ZydisDecoderInit(&d, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
    ZydisDecoderEnableMode(&d, ZYDIS_DECODER_MODE_MINIMAL, ZYAN_TRUE);
    return d;
  }();
  return instance;
}

std::string hex_bytes(CodeSpan code, std::uintptr_t address, std::size_t max) {
  std::string out;
  if (!code.contains(address)) return out;
  std::size_t first = address - code.address;
  for (std::size_t i = first; i < code.bytes.size() && i < first + max; ++i) {
    char buf[4];
    std::snprintf(buf, sizeof buf, i == first ? "%02x" : " %02x", code.bytes[i]);
    out += buf;
  }
  return out;
}

Status decode_into(CodeSpan code, std::uintptr_t address, ZydisView& view, Instruction& out) {
  if (code.bytes.empty()) return fail(ErrorCode::kInvalidArgument, address, "no bytes to decode (empty span)");
  if (!code.contains(address))
    return fail(ErrorCode::kInvalidArgument, address,
                "outside the code span [" + at(code.address) + ", " + at(code.end()) + ")");
  const std::size_t offset = address - code.address;
  ZydisDecoderContext context;
  const ZyanStatus status = ZydisDecoderDecodeInstruction(&minimal_decoder(), &context, code.bytes.data() + offset,
                                                          code.bytes.size() - offset, &view.insn);
  if (status == ZYDIS_STATUS_NO_MORE_DATA)
    return fail(ErrorCode::kDecodeFailed, address,
                "instruction truncated by the end of the span at " + at(code.end()) + " (bytes " +
                    hex_bytes(code, address) + ")");
  if (!ZYAN_SUCCESS(status))
    return fail(ErrorCode::kDecodeFailed, address, "invalid instruction (bytes " + hex_bytes(code, address) + ")");

  const ZydisDecodedInstruction& insn = view.insn;
  out = Instruction{};
  out.address = address;
  out.length = insn.length;

  // A relative immediate: a direct branch (jmp/jcc/call/jrcxz/loop) or xbegin's abort target.
  bool relative_branch = false;
  for (const auto& imm : insn.raw.imm) {
    if (imm.size != 0 && !imm.is_relative && out.imm_size == 0) {
      out.imm_offset = imm.offset;
      out.imm_size = imm.size / 8;
    }
    if (imm.size != 0 && imm.is_relative) {
      relative_branch = true;
      out.has_branch_target = true;
      out.branch_target = address + insn.length + static_cast<std::uintptr_t>(imm.value.s);
      out.rel_offset = imm.offset;
      out.rel_size = imm.size / 8;
    }
  }
  // A RIP-relative memory operand (legacy, VEX or EVEX alike: Zydis reports
  // base = rip). In 64-bit mode only ModRM mod=00 rm=101 encodes one; Zydis's
  // operands confirm it (some opcodes read that ModRM as registers).
  const bool may_be_rip_relative =
      (insn.attributes & ZYDIS_ATTRIB_HAS_MODRM) && insn.raw.modrm.mod == 0 && insn.raw.modrm.rm == 5;
  ZydisDecodedOperand operands[ZYDIS_MAX_OPERAND_COUNT];
  std::uint8_t operand_count = 0;
  if (may_be_rip_relative && insn.operand_count != 0) {  // Operands need a full decode.
    if (!ZYAN_SUCCESS(ZydisDecoderDecodeInstruction(&decoder(), &context, code.bytes.data() + offset,
                                                    code.bytes.size() - offset, &view.insn)) ||
        !ZYAN_SUCCESS(ZydisDecoderDecodeOperands(&decoder(), &context, &insn, operands, insn.operand_count)))
      return fail(ErrorCode::kDecodeFailed,
                  at(address) + ": invalid operands (bytes " + hex_bytes(code, address) + ")");
    operand_count = insn.operand_count;
  }
  for (std::uint8_t i = 0; i < operand_count; ++i) {
    const ZydisDecodedOperand& op = operands[i];
    if (op.type != ZYDIS_OPERAND_TYPE_MEMORY) continue;
    if (op.mem.base != ZYDIS_REGISTER_RIP && op.mem.base != ZYDIS_REGISTER_EIP) continue;
    ZyanU64 target = 0;
    if (!ZYAN_SUCCESS(ZydisCalcAbsoluteAddress(&insn, &op, address, &target))) continue;
    out.has_memory_target = true;
    out.memory_target = target;
    out.rel_offset = insn.raw.disp.offset;
    out.rel_size = insn.raw.disp.size / 8;
    break;
  }
  out.flow = classify(insn, relative_branch);
  // Zydis files the multi-byte nop (0f 1f /0) under the WIDENOP category, so
  // the category alone misses it; its mnemonic is NOP like every other form.
  out.is_padding = insn.mnemonic == ZYDIS_MNEMONIC_NOP || insn.meta.category == ZYDIS_CATEGORY_NOP ||
                   insn.mnemonic == ZYDIS_MNEMONIC_INT3;
  out.is_endbr64 = insn.mnemonic == ZYDIS_MNEMONIC_ENDBR64;
  out.is_mov = insn.mnemonic == ZYDIS_MNEMONIC_MOV;
  return {};
}

}  // namespace detail

Result<Instruction> decode(CodeSpan code, std::uintptr_t address) {
  detail::ZydisView view;
  Instruction out;
  PUNCH_TRY(detail::decode_into(code, address, view, out));
  return out;
}

Result<std::vector<Instruction>> decode_all(CodeSpan code) {
  if (code.bytes.empty()) return fail(ErrorCode::kInvalidArgument, code.address, "no bytes to decode (empty span)");
  std::vector<Instruction> out;
  out.reserve(code.bytes.size() / 4 + 1);
  detail::ZydisView view;
  for (std::uintptr_t a = code.address; a < code.end();) {
    Instruction insn;
    PUNCH_TRY(detail::decode_into(code, a, view, insn));
    out.push_back(insn);
    a = insn.end();
  }
  return out;
}

std::string format(CodeSpan code, std::uintptr_t address) {
  if (!code.contains(address)) return "(undecodable: outside the span)";
  ZydisDecodedInstruction insn;
  ZydisDecodedOperand operands[ZYDIS_MAX_OPERAND_COUNT];
  const std::size_t offset = address - code.address;
  if (!ZYAN_SUCCESS(
          ZydisDecoderDecodeFull(&decoder(), code.bytes.data() + offset, code.bytes.size() - offset, &insn, operands)))
    return "(undecodable: " + detail::hex_bytes(code, address) + ")";
  static const ZydisFormatter formatter = [] {
    ZydisFormatter f;
    ZydisFormatterInit(&f, ZYDIS_FORMATTER_STYLE_INTEL);
    return f;
  }();
  char text[256];
  if (!ZYAN_SUCCESS(ZydisFormatterFormatInstruction(&formatter, &insn, operands, insn.operand_count_visible, text,
                                                    sizeof text, address, nullptr)))
    return "(unformattable: " + detail::hex_bytes(code, address, insn.length) + ")";
  return text;
}

}  // namespace punch::disasm
