// punch::runtime::walk_stack — return addresses of a thread's stack, never faulting.
//
// For an in-process sampling profiler or a crash handler: usable in a signal
// handler (no allocation, no lock), every read of the stack goes through
// safe_read_some (/proc/self/mem), so a garbage frame pointer ends the walk
// instead of the process. A frame in JIT code registered with a
// FrameDescription is unwound with its rows (so frameless JIT functions are
// walked through); any other frame is assumed to keep the frame pointer chain
// ([rbp] = caller's rbp, [rbp + 8] = return address). Code compiled without
// frame pointers (-O2's default) shows up as a skipped caller or ends the
// walk: build the code you want walked with -fno-omit-frame-pointer. The walk
// stops at depth `out.size()`, at a null or unreadable return address, and
// at a frame whose stack pointer does not move up the stack.
#pragma once

#include <ucontext.h>

#include <cstddef>
#include <cstdint>
#include <span>

namespace punch::runtime {

//! Walks from the interrupted state of a signal handler's context (its third
//! argument): out[0] is the interrupted pc, then one return address per
//! caller. Returns how many addresses were stored.
std::size_t walk_stack(const ucontext_t& context, std::span<std::uintptr_t> out) noexcept;

//! Walks the calling thread's stack: out[0] is the return address into the
//! caller of walk_stack. Returns how many addresses were stored.
std::size_t walk_stack(std::span<std::uintptr_t> out) noexcept;

//! The walk from explicit registers (what both forms call).
std::size_t walk_stack(std::uintptr_t pc, std::uintptr_t sp, std::uintptr_t fp, std::span<std::uintptr_t> out) noexcept;

}  // namespace punch::runtime
