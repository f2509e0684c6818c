// punch::runtime::FrameDescription — how a JIT function's frame changes along its code.
//
// Unwinders (libgcc's for C++ exceptions and _Unwind_Backtrace, gdb, and
// punch's walk_stack) need to know, at every address of a function, where the
// caller's frame is: the CFA (the value rsp had before the call; the return
// address is just below it) and where callee-saved registers were saved.
// Compilers say this in .eh_frame; JIT code says it with a FrameDescription,
// from which punch builds the .eh_frame bytes (see eh_frame_writer.hpp) and
// walk_stack's rows. The description is plain data: a list of steps, each
// taking effect at an offset (just after the instruction that made it).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include <asmjit/core.h>

#include <punch/result.hpp>

namespace punch::runtime {

struct FrameDescription {
  //! One change of the frame. Registers are asmjit general-purpose ids
  //! (`asmjit::x86::rbx.id()`, rbp is 5); the writer converts them to DWARF numbers.
  struct Step {
    enum class Op : std::uint8_t {
      kPush,             //!< rsp -= 8 and `reg` is saved in the new slot.
      kPop,              //!< rsp += 8 and `reg` holds its caller's value again. Popping rbp while
                         //!< the CFA follows rbp means the frame is gone (`leave` / `mov rsp, rbp; pop rbp`).
      kSetFramePointer,  //!< rbp = rsp: from here the CFA follows rbp, whatever rsp does.
      kAdjustStack,      //!< rsp -= amount (negative: the stack shrinks, `add rsp, n`).
      kRemember,         //!< Remembers the frame as it is (before an epilogue in mid-function)...
      kRestore,          //!< ...and returns to it (after the epilogue's `ret`).
    };
    std::uint32_t offset = 0;  //!< Bytes from the function's start; steps are in offset order.
    Op op = Op::kPush;
    std::uint8_t reg = 0;     //!< kPush, kPop.
    std::int32_t amount = 0;  //!< kAdjustStack.
  };

  //! Empty: the CFA is rsp + 8 throughout (a function that never moves rsp, like a tail jump).
  std::vector<Step> steps;

  //! A function without frame pointer that does `sub rsp, stack_adjust`; the
  //! instruction ends at `adjusted_at` (0: the adjustment holds from the start,
  //! e.g. code that is only ever described at its call sites).
  static FrameDescription frameless(std::uint32_t stack_adjust = 0, std::uint32_t adjusted_at = 0);

  //! The standard prologue `push rbp; mov rbp, rsp` starting at `prolog_at`,
  //! and for each epilogue, the offset just after the `pop rbp` or `leave`
  //! that ends the frame (a one-byte `ret` must follow it).
  static FrameDescription frame_pointer(std::uint32_t prolog_at = 0, std::span<const std::uint32_t> rbp_popped_at = {});

  //! The steps of asmjit's emitProlog(frame) at `prolog_at` and emitEpilog(frame)
  //! at each of `epilogs_at` (record `a.offset()` before each call). The
  //! prologue and epilogue are emitted once into a scratch buffer and their
  //! instructions read back, so the offsets are asmjit's own. kUnsupported for
  //! a frame whose CFA cannot be followed (dynamic stack alignment without a
  //! preserved frame pointer) or an instruction the reader does not know.
  static Result<FrameDescription> from_func_frame(const asmjit::FuncFrame& frame, std::uint32_t prolog_at,
                                                  std::span<const std::uint32_t> epilogs_at = {});
};

}  // namespace punch::runtime
