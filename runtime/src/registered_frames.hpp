// Unwind info of JIT functions, registered where unwinders look for it.
//
// For each function with a FrameDescription: its rows go into the unwind
// table (walk_stack), and a CIE+FDE block built by write_eh_frame is handed
// to libgcc's __register_frame, which C++ exceptions, _Unwind_Backtrace and
// glibc's backtrace() search before the loaded objects. One block per
// function, so releasing a function never touches the block of another one
// that may be running (libgcc parses a found FDE after dropping its lock).
// libgcc keeps a pointer to the block: it lives until __deregister_frame,
// which runs before the code's memory goes back to its heap.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include <punch/runtime/frame_description.hpp>

#include "code_events.hpp"

namespace punch::runtime::detail {

struct FrameToRegister {
  std::uintptr_t start = 0;
  std::size_t size = 0;
  const FrameDescription* frame = nullptr;
};

//! Registers each function (descriptions that frame_rows refuses are skipped:
//! Jit validates them before it writes any code).
void register_frames(std::span<const FrameToRegister> functions);

//! Deregisters every function starting in one of the ranges.
void deregister_frames(std::span<const code_events::ReleasedCode> ranges);

//! How many functions are registered with libgcc (for tests).
std::size_t registered_frame_count();

//! The frame description tools use for a piece of code: the Jit caller's, the
//! copied prologue's for a trampoline (in `scratch`), a constant CFA = rsp + 8
//! for a relay (a lone jump), else none.
const FrameDescription* frame_of(const code_events::AddedCode& code, FrameDescription& scratch);

}  // namespace punch::runtime::detail
