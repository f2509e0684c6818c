// Internal: byte encodings of the few instructions punch writes itself.
// Hand-encoded because each is a fixed template with one field; the tests
// decode every one of them with Zydis to check it.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

namespace punch::disasm::detail {

//! The rel32 from `next` (address after the instruction) to `to`, if it fits.
inline bool rel32_between(std::uintptr_t next, std::uintptr_t to, std::int32_t& rel) {
  const auto diff = static_cast<std::int64_t>(to - next);  // Two's complement distance.
  if (diff < std::numeric_limits<std::int32_t>::min() || diff > std::numeric_limits<std::int32_t>::max()) return false;
  rel = static_cast<std::int32_t>(diff);
  return true;
}

//! The rel8 from `next` to `to`, if it fits.
inline bool rel8_between(std::uintptr_t next, std::uintptr_t to, std::int8_t& rel) {
  const auto diff = static_cast<std::int64_t>(to - next);
  if (diff < -128 || diff > 127) return false;
  rel = static_cast<std::int8_t>(diff);
  return true;
}

inline void emit_le(std::vector<std::uint8_t>& out, std::uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<std::uint8_t>(value >> (8 * i)));
}

inline void emit_jmp_rel8(std::vector<std::uint8_t>& out, std::int8_t rel) {
  out.push_back(0xEB);
  out.push_back(static_cast<std::uint8_t>(rel));
}

inline void emit_jmp_rel32(std::vector<std::uint8_t>& out, std::int32_t rel) {
  out.push_back(0xE9);
  emit_le(out, static_cast<std::uint32_t>(rel), 4);
}

//! jmp [rip+0]; .quad to — 14 bytes, no register, no stack.
inline void emit_jmp_absolute(std::vector<std::uint8_t>& out, std::uint64_t to) {
  out.insert(out.end(), {0xFF, 0x25, 0, 0, 0, 0});
  emit_le(out, to, 8);
}

//! call [rip+2]; jmp +8; .quad to — 16 bytes. The call pushes the address of
//! the `jmp +8`, which skips the quad: a return lands right after the sequence.
inline void emit_call_absolute(std::vector<std::uint8_t>& out, std::uint64_t to) {
  out.insert(out.end(), {0xFF, 0x15, 2, 0, 0, 0, 0xEB, 8});
  emit_le(out, to, 8);
}

inline void emit_call_rel32(std::vector<std::uint8_t>& out, std::int32_t rel) {
  out.push_back(0xE8);
  emit_le(out, static_cast<std::uint32_t>(rel), 4);
}

//! jcc rel8 / rel32 for condition code `cc` (0..15, the low nibble of the opcode).
inline void emit_jcc_rel8(std::vector<std::uint8_t>& out, std::uint8_t cc, std::int8_t rel) {
  out.push_back(static_cast<std::uint8_t>(0x70 | cc));
  out.push_back(static_cast<std::uint8_t>(rel));
}
inline void emit_jcc_rel32(std::vector<std::uint8_t>& out, std::uint8_t cc, std::int32_t rel) {
  out.push_back(0x0F);
  out.push_back(static_cast<std::uint8_t>(0x80 | cc));
  emit_le(out, static_cast<std::uint32_t>(rel), 4);
}

//! Pushes a 64-bit constant without a scratch register and without touching
//! flags: `push imm32` when it sign-extends to the value (5 bytes), else
//! `lea rsp, [rsp-8]; mov dword [rsp], lo; mov dword [rsp+4], hi` (20 bytes).
//! Either way exactly the 8 bytes below rsp are written, like the call it replaces.
inline constexpr std::size_t kPushShortSize = 5;
inline constexpr std::size_t kPushLongSize = 20;
inline bool push_fits_imm32(std::uint64_t value) {
  const auto s = static_cast<std::int64_t>(value);
  return s >= std::numeric_limits<std::int32_t>::min() && s <= std::numeric_limits<std::int32_t>::max();
}
inline void emit_push_constant(std::vector<std::uint8_t>& out, std::uint64_t value) {
  if (push_fits_imm32(value)) {
    out.push_back(0x68);
    emit_le(out, value, 4);
    return;
  }
  out.insert(out.end(), {0x48, 0x8D, 0x64, 0x24, 0xF8});  // lea rsp, [rsp-8]
  out.insert(out.end(), {0xC7, 0x04, 0x24});              // mov dword [rsp], imm32
  emit_le(out, value & 0xFFFFFFFFu, 4);
  out.insert(out.end(), {0xC7, 0x44, 0x24, 0x04});  // mov dword [rsp+4], imm32
  emit_le(out, value >> 32, 4);
}

}  // namespace punch::disasm::detail
