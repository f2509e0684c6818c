// code_events — the one place every tool that names code hears about it.
//
// Jit and register_code call code_added after the bytes are written and
// synced (the code can run), and code_released before the memory goes back to
// its heap (so no tool keeps a view of memory that can be reused). Each call
// goes to a fixed list of sinks, in order for added and in reverse for
// released; a sink decides itself, cheaply, whether it is on.
//
// Adding a tool is one line: define a `const Sink` in its .cpp, declare it
// below, and list it in kSinks in code_events.cpp. A sink must be thread-safe
// (Jit::add runs on any thread), must not throw or report errors (tools are
// best effort: a failing perf map never fails an add), and must not call back
// into Jit or CodeHeap.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include <punch/runtime/code_kind.hpp>

#include "frame_rows.hpp"

namespace punch::runtime::code_events {

//! One piece of code that was just written and synced.
struct AddedCode {
  std::uintptr_t address = 0;
  std::size_t size = 0;   //!< Bytes of code (not the allocation's padding).
  std::string_view name;  //!< Never empty; valid only during the call (copy it).
  CodeKind kind = CodeKind::kJit;
  std::span<const std::uint8_t> bytes;  //!< The code as written, `size` bytes (valid during the call).
  //! Where the CFA and saved registers are at each offset (frame_rows(), built
  //! once by whoever announces the code); empty: no unwind info. Every tool
  //! that describes frames (libgcc, walk_stack, gdb) uses these rows.
  std::span<const detail::FrameRow> frame_rows;
};

//! One piece of code about to be freed: [address, address + size) is the whole allocation.
struct ReleasedCode {
  std::uintptr_t address = 0;
  std::size_t size = 0;
};

//! A tool that hears about code. Both functions are required.
struct Sink {
  void (*added)(std::span<const AddedCode> batch);        //!< After write + sync, one call per batch.
  void (*released)(std::span<const ReleasedCode> batch);  //!< Before the memory is freed.
};

// The sinks (each defined in its tool's .cpp; listed in kSinks in code_events.cpp).
extern const Sink kRegistrySink;  // code_registry.cpp
extern const Sink kUnwindSink;    // registered_frames.cpp (libgcc and walk_stack)
extern const Sink kGdbSink;       // gdb_jit.cpp
extern const Sink kPerfMapSink;   // perf_map.cpp
extern const Sink kJitdumpSink;   // jitdump.cpp

//! Tells every sink about a batch of new code.
void code_added(std::span<const AddedCode> batch) noexcept;
//! Tells every sink (in reverse order) that a batch of code is about to be freed.
void code_released(std::span<const ReleasedCode> batch) noexcept;

inline void code_added(std::uintptr_t address, std::size_t size, std::string_view name, CodeKind kind,
                       std::span<const std::uint8_t> bytes,
                       std::span<const detail::FrameRow> frame_rows = {}) noexcept {
  const AddedCode one{address, size, name, kind, bytes, frame_rows};
  code_added(std::span(&one, 1));
}
inline void code_released(std::uintptr_t address, std::size_t size) noexcept {
  const ReleasedCode one{address, size};
  code_released(std::span(&one, 1));
}

}  // namespace punch::runtime::code_events
