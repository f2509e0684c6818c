// immediate_load: recognizes a register load of a constant from its bytes
// (Intel SDM vol. 2, MOV: B8+rd/io and C7 /0 id), so the trap handler can
// carry one out instead of sending the thread to an out-of-line copy.
#include <punch/disasm/instruction.hpp>

namespace punch::disasm {

std::optional<ImmediateLoad> immediate_load(std::span<const std::uint8_t> bytes) {
  std::size_t i = 0;
  std::uint8_t rex = 0;
  if (!bytes.empty() && (bytes[0] & 0xF0) == 0x40) rex = bytes[i++];
  if (i >= bytes.size()) return std::nullopt;
  const bool wide = rex & 0x08;                   // REX.W
  const std::uint8_t extend = (rex & 0x01) << 3;  // REX.B extends the register in opcode or ModRM.rm.
  const std::uint8_t opcode = bytes[i++];
  ImmediateLoad load;
  std::size_t immediate_size = 4;
  if (opcode >= 0xB8 && opcode <= 0xBF) {  // mov r32, imm32 / mov r64, imm64
    load.reg = (opcode & 0x07) | extend;
    if (wide) immediate_size = 8;
  } else if (opcode == 0xC7) {  // mov r/m32, imm32 (REX.W: r/m64, sign-extended); register form, /0 only.
    if (i >= bytes.size() || (bytes[i] & 0xF8) != 0xC0) return std::nullopt;
    load.reg = (bytes[i++] & 0x07) | extend;
  } else {
    return std::nullopt;
  }
  if (load.reg == 4 || bytes.size() != i + immediate_size) return std::nullopt;
  std::uint64_t value = 0;
  for (std::size_t k = 0; k < immediate_size; ++k) value |= std::uint64_t{bytes[i + k]} << (8 * k);
  if (immediate_size == 4 && wide)
    value = static_cast<std::uint64_t>(static_cast<std::int64_t>(static_cast<std::int32_t>(value)));
  load.value = value;
  return load;
}

}  // namespace punch::disasm
