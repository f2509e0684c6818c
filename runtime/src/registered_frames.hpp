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
#include <vector>

#include <punch/runtime/code_kind.hpp>

#include "code_events.hpp"
#include "frame_rows.hpp"

namespace punch::runtime::detail {

struct FrameToRegister {
  std::uintptr_t start = 0;
  std::size_t size = 0;
  std::span<const FrameRow> rows;  //!< From frame_rows(); empty: nothing to register.
};

//! Registers each function that has rows.
void register_frames(std::span<const FrameToRegister> functions);

//! Deregisters every function starting in one of the ranges.
void deregister_frames(std::span<const code_events::ReleasedCode> ranges);

//! How many functions are registered with libgcc (for tests).
std::size_t registered_frame_count();

//! The frame rows of code punch writes itself, by its kind: the copied
//! prologue's for a trampoline, a constant CFA = rsp + 8 for a relay (a lone
//! jump), else none (Jit code has its caller's description).
std::vector<FrameRow> frame_rows_of(CodeKind kind, std::span<const std::uint8_t> bytes);

}  // namespace punch::runtime::detail
