// FrameDescription: the common shapes, and asmjit's prologue/epilogue read back.
#include <punch/runtime/frame_description.hpp>

#include <string>

#include <asmjit/x86.h>

#include "prologue_reader.hpp"

namespace punch::runtime {
namespace {

using detail::PrologReader;
using Op = FrameDescription::Step::Op;
constexpr std::uint8_t kRbp = 5;
using detail::make_step;

// Emits asmjit's prologue or epilogue for `frame` into a scratch buffer.
Result<std::vector<std::uint8_t>> scratch(const asmjit::FuncFrame& frame, bool epilog) {
  asmjit::CodeHolder code;
  code.init(asmjit::Environment::host());
  asmjit::x86::Assembler a(&code);
  asmjit::Error err = epilog ? a.emitEpilog(frame) : a.emitProlog(frame);
  if (err)
    return fail(ErrorCode::kInvalidArgument, std::string("asmjit ") + (epilog ? "emitEpilog" : "emitProlog") + ": " +
                                                 asmjit::DebugUtils::errorAsString(err));
  const auto& buffer = code.textSection()->buffer();
  return std::vector<std::uint8_t>(buffer.data(), buffer.data() + buffer.size());
}

}  // namespace

FrameDescription FrameDescription::frameless(std::uint32_t stack_adjust, std::uint32_t adjusted_at) {
  FrameDescription d;
  if (stack_adjust != 0)
    d.steps.push_back(make_step(adjusted_at, Op::kAdjustStack, 0, static_cast<std::int32_t>(stack_adjust)));
  return d;
}

FrameDescription FrameDescription::frame_pointer(std::uint32_t prolog_at,
                                                 std::span<const std::uint32_t> rbp_popped_at) {
  FrameDescription d;
  d.steps.push_back(make_step(prolog_at + 1, Op::kPush, kRbp));       // push rbp
  d.steps.push_back(make_step(prolog_at + 4, Op::kSetFramePointer));  // mov rbp, rsp
  for (std::uint32_t popped : rbp_popped_at) {
    d.steps.push_back(make_step(popped, Op::kRemember));
    d.steps.push_back(make_step(popped, Op::kPop, kRbp));
    d.steps.push_back(make_step(popped + 1, Op::kRestore));  // after the ret
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
    if (at < prolog_at)
      return fail(ErrorCode::kInvalidArgument, "an epilogue at +" + std::to_string(at) +
                                                   " comes before the prologue at +" + std::to_string(prolog_at));
    d.steps.push_back(make_step(at, Op::kRemember));
    if (Status ok = PrologReader(*epilog, at, d.steps).read(true); !ok) return tl::unexpected(ok.error());
    d.steps.push_back(make_step(at + static_cast<std::uint32_t>(epilog->size()), Op::kRestore));
  }
  return d;
}

}  // namespace punch::runtime
