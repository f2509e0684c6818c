// Reading a prologue's or epilogue's frame changes back from its bytes.
//
// Knows the few instructions asmjit's emitProlog/emitEpilog use (and that a
// function's displaced first instructions usually are): push/pop, endbr64,
// mov rbp, rsp, sub/add/and rsp, imm, lea/mov rsp from rbp, vzeroupper, emms,
// ret. No decoder and no asmjit: the code_events sinks use it for trampolines,
// and code linked into an LD_PRELOAD tool must not pull asmjit in.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include <punch/result.hpp>
#include <punch/runtime/frame_description.hpp>

namespace punch::runtime::detail {

inline FrameDescription::Step make_step(std::uint32_t offset, FrameDescription::Step::Op op, std::uint8_t reg = 0,
                                        std::int32_t amount = 0) {
  return FrameDescription::Step{offset, op, reg, amount};
}

//! Appends a step for each instruction that moves rsp or the CFA. `at` is the
//! function offset of bytes[0].
class PrologReader {
 public:
  using Step = FrameDescription::Step;
  using Op = Step::Op;

  PrologReader(std::span<const std::uint8_t> bytes, std::uint32_t at, std::vector<Step>& out)
      : bytes_(bytes), at_(at), out_(out) {}

  // Reads until the end of the bytes or, in a prologue, the first instruction
  // that no longer shapes the frame (vector register saves follow the frame).
  Status read(bool epilog) {
    while (pos_ < bytes_.size()) {
      const std::size_t start = pos_;
      if (!one(epilog)) {
        if (!epilog) return {};
        return fail(ErrorCode::kUnsupported, "asmjit epilogue: byte 0x" + hex(bytes_[start]) + " at +" +
                                                 std::to_string(start) + " is not an instruction punch can follow");
      }
    }
    return {};
  }

 private:
  static std::string hex(std::uint8_t b) {
    static const char* digits = "0123456789abcdef";
    return std::string{digits[b >> 4], digits[b & 15]};
  }
  bool match(std::initializer_list<std::uint8_t> prefix) const {
    return bytes_.size() - pos_ >= prefix.size() &&
           std::memcmp(bytes_.data() + pos_, prefix.begin(), prefix.size()) == 0;
  }
  std::uint32_t end_of(std::size_t length) {
    pos_ += length;
    return at_ + static_cast<std::uint32_t>(pos_);
  }
  std::int32_t imm(std::size_t at, std::size_t size) const {
    if (size == 1) return static_cast<std::int8_t>(bytes_[at]);
    std::int32_t v;
    std::memcpy(&v, bytes_.data() + at, 4);
    return v;
  }

  // One instruction; false when it is not one asmjit's prologue/epilogue uses.
  bool one(bool epilog) {
    const std::uint8_t b = bytes_[pos_];
    const bool rex_b = b == 0x41 && pos_ + 1 < bytes_.size();
    const std::uint8_t op = rex_b ? bytes_[pos_ + 1] : b;
    const std::uint8_t high = rex_b ? 8 : 0;
    if (!epilog && op >= 0x50 && op <= 0x57) {  // push r
      out_.push_back(make_step(end_of(rex_b ? 2 : 1), Op::kPush, static_cast<std::uint8_t>(high + op - 0x50)));
      return true;
    }
    if (epilog && op >= 0x58 && op <= 0x5f) {  // pop r
      out_.push_back(make_step(end_of(rex_b ? 2 : 1), Op::kPop, static_cast<std::uint8_t>(high + op - 0x58)));
      return true;
    }
    if (rex_b) return false;
    if (!epilog && match({0xf3, 0x0f, 0x1e, 0xfa})) return end_of(4), true;  // endbr64 (copied prologues)
    if (!epilog && match({0x48, 0x89, 0xe5})) {                              // mov rbp, rsp
      out_.push_back(make_step(end_of(3), Op::kSetFramePointer));
      return true;
    }
    for (std::size_t size : {1u, 4u}) {
      const std::uint8_t opcode = size == 1 ? 0x83 : 0x81;
      if (bytes_.size() - pos_ < 3 + size || !match({0x48, opcode})) continue;
      const std::uint8_t modrm = bytes_[pos_ + 2];
      const std::int32_t value = imm(pos_ + 3, size);
      if (!epilog && modrm == 0xec) {  // sub rsp, imm
        out_.push_back(make_step(end_of(3 + size), Op::kAdjustStack, 0, value));
        return true;
      }
      if (epilog && modrm == 0xc4) {  // add rsp, imm
        out_.push_back(make_step(end_of(3 + size), Op::kAdjustStack, 0, -value));
        return true;
      }
      if (!epilog && modrm == 0xe4) {  // and rsp, -align: only under a frame pointer (checked by the caller)
        end_of(3 + size);
        return true;
      }
    }
    // Moves that leave the CFA alone: mov saReg, rsp/rbp in the prologue; in the
    // epilogue, mov rsp, rbp and lea rsp, [rbp + disp], used only while the CFA follows rbp.
    if (!epilog && (match({0x48, 0x89}) || match({0x4c, 0x89})) && pos_ + 2 < bytes_.size() &&
        (bytes_[pos_ + 2] & 0xf0) == 0xe0) {
      end_of(3);
      return true;
    }
    if (epilog && match({0x48, 0x89, 0xec})) return end_of(3), true;
    if (epilog && match({0x48, 0x8d, 0x65}) && bytes_.size() - pos_ >= 4) return end_of(4), true;
    if (epilog && match({0x48, 0x8d, 0xa5}) && bytes_.size() - pos_ >= 7) return end_of(7), true;
    if (epilog && match({0xc5, 0xf8, 0x77})) return end_of(3), true;               // vzeroupper
    if (epilog && match({0x0f, 0x77})) return end_of(2), true;                     // emms
    if (epilog && b == 0xc3) return end_of(1), true;                               // ret
    if (epilog && b == 0xc2 && bytes_.size() - pos_ >= 3) return end_of(3), true;  // ret imm16
    return false;
  }

  std::span<const std::uint8_t> bytes_;
  std::uint32_t at_;
  std::vector<Step>& out_;
  std::size_t pos_ = 0;
};

//! The frame of a copy of a function's first instructions (a hook's
//! trampoline: the displaced instructions, then a jump back), read up to the
//! first instruction the reader does not know (assumed to leave rsp alone).
FrameDescription describe_copied_prologue(std::span<const std::uint8_t> code);

}  // namespace punch::runtime::detail
