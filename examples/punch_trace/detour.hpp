// The detour punch_trace puts in front of a traced function, emitted per function.
#pragma once

#include <span>

#include <punch/result.hpp>

#include "traced_function.hpp"

namespace punch_trace {

//! Writes, into punch's code heap, for each function not `timed`:
//!     endbr64
//!     mov r11, &fn.calls ; lock inc qword [r11]
//!     mov r11, &fn.original ; jmp qword [r11]
//! Only r11 and flags change (r11 is scratch at a call in the SysV ABI and
//! carries no argument; the flags are not preserved across calls either), the
//! stack is untouched and the original is reached by a jump, so every argument
//! register, `al` of a varargs call, stack arguments and the return address
//! are exactly what the caller left: any signature works. Nothing is called,
//! so a detour for malloc cannot recurse into malloc.
//!
//! For a `timed` function the detour is a frame of its own that reads the time
//! stamp counter, counts the call, CALLS the original, and adds the ticks to
//! fn.ticks before it returns. The argument registers, `al`, and the return
//! registers (rax, rdx, xmm0/1, st0) pass through, but stack arguments are 32
//! bytes further away and the function sees the detour as its caller: only
//! for functions whose arguments all fit in registers and that do not look at
//! their return address (dlsym with RTLD_NEXT does). A real call/ret pair,
//! so it works under a shadow stack and when the function never returns
//! (longjmp, execve). No unwind information: a backtrace or a C++ exception
//! through a timed detour stops there.
//!
//! One detour for each function given, with one write and one sync in all.
//! Sets each one's `detour`; all or nothing.
punch::Status emit_detours(std::span<TracedFunction* const> functions);

}  // namespace punch_trace
