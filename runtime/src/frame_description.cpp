// FrameDescription: the common shapes, and asmjit's prologue/epilogue read back.
#include <punch/runtime/frame_description.hpp>

#include <cstring>
#include <string>

#include <asmjit/x86.h>

#include "registered_frames.hpp"

namespace punch::runtime {
namespace {

using Step = FrameDescription::Step;
using Op = Step::Op;
constexpr std::uint8_t kRbp = 5;

Step step(std::uint32_t offset, Op op, std::uint8_t reg = 0, std::int32_t amount = 0) {
  return Step{offset, op, reg, amount};
}

// Reads back the instructions asmjit's prologue and epilogue use, appending a
// step for each one that moves rsp or the CFA. `at` is the function offset of
// bytes[0]. The handful of encodings are the ones x86::EmitHelper emits.
class PrologReader {
 public:
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
    return bytes_.size() - pos_ >= prefix.size() && std::memcmp(bytes_.data() + pos_, prefix.begin(), prefix.size()) == 0;
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
      out_.push_back(step(end_of(rex_b ? 2 : 1), Op::kPush, static_cast<std::uint8_t>(high + op - 0x50)));
      return true;
    }
    if (epilog && op >= 0x58 && op <= 0x5f) {  // pop r
      out_.push_back(step(end_of(rex_b ? 2 : 1), Op::kPop, static_cast<std::uint8_t>(high + op - 0x58)));
      return true;
    }
    if (rex_b) return false;
    if (!epilog && match({0xf3, 0x0f, 0x1e, 0xfa})) return end_of(4), true;  // endbr64 (copied prologues)
    if (!epilog && match({0x48, 0x89, 0xe5})) {  // mov rbp, rsp
      out_.push_back(step(end_of(3), Op::kSetFramePointer));
      return true;
    }
    for (std::size_t size : {1u, 4u}) {
      const std::uint8_t opcode = size == 1 ? 0x83 : 0x81;
      if (bytes_.size() - pos_ < 3 + size || !match({0x48, opcode})) continue;
      const std::uint8_t modrm = bytes_[pos_ + 2];
      const std::int32_t value = imm(pos_ + 3, size);
      if (!epilog && modrm == 0xec) {  // sub rsp, imm
        out_.push_back(step(end_of(3 + size), Op::kAdjustStack, 0, value));
        return true;
      }
      if (epilog && modrm == 0xc4) {  // add rsp, imm
        out_.push_back(step(end_of(3 + size), Op::kAdjustStack, 0, -value));
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
    if (epilog && match({0xc5, 0xf8, 0x77})) return end_of(3), true;  // vzeroupper
    if (epilog && match({0x0f, 0x77})) return end_of(2), true;        // emms
    if (epilog && b == 0xc3) return end_of(1), true;                    // ret
    if (epilog && b == 0xc2 && bytes_.size() - pos_ >= 3) return end_of(3), true;  // ret imm16
    return false;
  }

  std::span<const std::uint8_t> bytes_;
  std::uint32_t at_;
  std::vector<Step>& out_;
  std::size_t pos_ = 0;
};

// Emits asmjit's prologue or epilogue for `frame` into a scratch buffer.
Result<std::vector<std::uint8_t>> scratch(const asmjit::FuncFrame& frame, bool epilog) {
  asmjit::CodeHolder code;
  code.init(asmjit::Environment::host());
  asmjit::x86::Assembler a(&code);
  asmjit::Error err = epilog ? a.emitEpilog(frame) : a.emitProlog(frame);
  if (err)
    return fail(ErrorCode::kInvalidArgument,
                std::string("asmjit ") + (epilog ? "emitEpilog" : "emitProlog") + ": " +
                    asmjit::DebugUtils::errorAsString(err));
  const auto& buffer = code.textSection()->buffer();
  return std::vector<std::uint8_t>(buffer.data(), buffer.data() + buffer.size());
}

}  // namespace

FrameDescription FrameDescription::frameless(std::uint32_t stack_adjust, std::uint32_t adjusted_at) {
  FrameDescription d;
  if (stack_adjust != 0) d.steps.push_back(step(adjusted_at, Op::kAdjustStack, 0, static_cast<std::int32_t>(stack_adjust)));
  return d;
}

FrameDescription FrameDescription::frame_pointer(std::uint32_t prolog_at, std::span<const std::uint32_t> rbp_popped_at) {
  FrameDescription d;
  d.steps.push_back(step(prolog_at + 1, Op::kPush, kRbp));         // push rbp
  d.steps.push_back(step(prolog_at + 4, Op::kSetFramePointer));    // mov rbp, rsp
  for (std::uint32_t popped : rbp_popped_at) {
    d.steps.push_back(step(popped, Op::kRemember));
    d.steps.push_back(step(popped, Op::kPop, kRbp));
    d.steps.push_back(step(popped + 1, Op::kRestore));  // after the ret
  }
  return d;
}

Result<FrameDescription> FrameDescription::from_func_frame(const asmjit::FuncFrame& frame, std::uint32_t prolog_at,
                                                           std::span<const std::uint32_t> epilogs_at) {
  if (frame.hasDynamicAlignment() && !frame.hasPreservedFP())
    return fail(ErrorCode::kUnsupported,
                "a frame with dynamic stack alignment and no preserved frame pointer: its CFA cannot be followed "
                "(call frame.setPreservedFP())");
  FrameDescription d;
  auto prolog = scratch(frame, false);
  if (!prolog) return tl::unexpected(std::move(prolog).error());
  if (Status ok = PrologReader(*prolog, prolog_at, d.steps).read(false); !ok) return tl::unexpected(ok.error());
  auto epilog = scratch(frame, true);
  if (!epilog) return tl::unexpected(std::move(epilog).error());
  for (std::uint32_t at : epilogs_at) {
    if (at < prolog_at) return fail(ErrorCode::kInvalidArgument, "an epilogue at +" + std::to_string(at) +
                                                                      " comes before the prologue at +" +
                                                                      std::to_string(prolog_at));
    d.steps.push_back(step(at, Op::kRemember));
    if (Status ok = PrologReader(*epilog, at, d.steps).read(true); !ok) return tl::unexpected(ok.error());
    d.steps.push_back(step(at + static_cast<std::uint32_t>(epilog->size()), Op::kRestore));
  }
  return d;
}

namespace detail {

FrameDescription describe_copied_prologue(std::span<const std::uint8_t> code) {
  FrameDescription d;
  (void)PrologReader(code, 0, d.steps).read(false);  // A prologue read never fails: it stops at what it does not know.
  return d;
}

}  // namespace detail
}  // namespace punch::runtime
