// The gdb JIT interface's bookkeeping: one in-memory object per batch of live code.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include <punch/runtime/frame_description.hpp>

#include "code_events.hpp"

namespace punch::runtime::detail {

struct GdbFunction {
  std::uintptr_t start = 0;
  std::size_t size = 0;
  std::string_view name;
  const FrameDescription* frame = nullptr;  //!< Null: the object names it but has no unwind info for it.
};

//! Registers one object naming `batch` (when the interface is on).
void gdb_jit_added(std::span<const GdbFunction> batch);

//! Unregisters every function starting in one of the ranges; a batch that
//! keeps other live functions is registered again, once, without them.
void gdb_jit_released(std::span<const code_events::ReleasedCode> ranges);

}  // namespace punch::runtime::detail
