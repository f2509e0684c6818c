// punch::runtime gdb JIT interface — gdb names JIT frames and unwinds through them.
//
// When on, every batch of code added through Jit (and punch's own trampolines)
// is described to gdb through its JIT interface (the `__jit_debug_descriptor`
// list and the `__jit_debug_register_code` breakpoint function, version 1): an
// in-memory ELF object with a symbol per function and the functions' unwind
// info. Released code is unregistered before its memory is reused. Off by
// default; on when the process starts with PUNCH_GDB=1, or through the API.
// It costs an object build (a few hundred bytes) per batch and nothing in gdb's
// absence beyond that: gdb reads the objects only when it is attached.
#pragma once

#include <cstddef>

namespace punch::runtime {

//! Turns the interface on or off for code added from now on (code already
//! registered stays registered until released).
void set_gdb_jit_enabled(bool on) noexcept;

//! Whether code added now is registered with gdb (PUNCH_GDB=1 at start, or set_gdb_jit_enabled).
bool gdb_jit_enabled() noexcept;

//! How many objects are in gdb's list right now (one per batch of live code).
std::size_t gdb_jit_object_count() noexcept;

}  // namespace punch::runtime
