// punch::patcher mid hook stub — the code between a mid hook's jump and its detour.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include <punch/result.hpp>

namespace punch::patcher::detail {

//! What a stub is built from.
struct MidStub {
  std::uintptr_t rip = 0;         //!< The hooked instruction, reported as MidContext::rip.
  std::uintptr_t detour = 0;      //!< The user's MidDetour.
  std::uintptr_t resume = 0;      //!< Where the thread continues: the relocated stolen instructions.
  std::uintptr_t in_flight = 0;   //!< A std::atomic<std::uint64_t>: threads inside the detour's call.
  bool vector_registers = false;  //!< Copy xmm0..15 into the context and back.
  bool vector_state = true;       //!< Save and restore the whole vector/x87 state around the call.
};

//! The stub's bytes, to live at `address` (see docs/design.md, "Mid-function hooks"):
//! endbr64; step below the red zone; save flags and GPRs into a MidContext;
//! cld; save the vector/x87 state (xsavec, xsave, else fxsave) in a
//! 64-byte-aligned area below it; count the thread in; call detour(context) with rsp aligned;
//! count it out; restore everything
//! (rsp from the context last); jmp resume. No push/ret: a shadow stack sees
//! only the call and its ret.
Result<std::vector<std::uint8_t>> emit_mid_stub(const MidStub& stub, std::uintptr_t address);

//! The most bytes emit_mid_stub produces for `stub`, wherever it and its resume address lie (what to allocate).
Result<std::size_t> mid_stub_size_bound(MidStub stub);

//! The extended state the stub saves: xsave with this component mask and
//! area size (xsavec where the CPU has it: components in their initial state
//! are skipped), or fxsave (512 bytes) when the OS does not enable xsave.
struct VectorSave {
  bool xsave = false;
  bool compacted = false;  //!< xsavec.
  std::uint64_t mask = 0;
  std::uint32_t size = 512;
};
//! Probed once (cpuid, xgetbv).
VectorSave vector_save();

}  // namespace punch::patcher::detail
