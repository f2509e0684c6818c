// The gdb JIT interface's bookkeeping: one in-memory object per batch of live code.
#pragma once

#include <span>

#include "code_events.hpp"

namespace punch::runtime::detail {

//! Registers one object naming `batch`, with unwind info for the code that
//! has frame rows (when the interface is on).
void gdb_jit_added(std::span<const code_events::AddedCode> batch);

//! Unregisters every function starting in one of the ranges; a batch that
//! keeps other live functions is registered again, once, without them.
void gdb_jit_released(std::span<const code_events::ReleasedCode> ranges);

}  // namespace punch::runtime::detail
