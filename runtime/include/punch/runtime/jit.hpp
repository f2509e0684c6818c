// punch::runtime::Jit — asmjit code into never-writable pages.
//
// Instead of asmjit's JitRuntime (which maps RWX or MAP_SHARED memory), Jit
// allocates from a CodeHeap, relocates the CodeHolder to that address,
// flattens it into a staging buffer, and writes it with the heap's CodeWriter.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include <asmjit/core.h>

#include <punch/result.hpp>
#include <punch/runtime/code_heap.hpp>
#include <punch/runtime/frame_description.hpp>

namespace punch::runtime {

//! What tools (the code registry, perf, gdb, unwinders) should know about a
//! function added through Jit. A plain aggregate: `jit.add(code, {"my_fn"})`.
struct JitFunctionInfo {
  //! The function's name in perf, gdb and crash reports; copied (need not
  //! outlive the call). Empty: tools show "jit:0x<address>".
  std::string_view name;
  //! How the function's frame changes along its code: from asmjit's FuncFrame
  //! (FrameDescription::from_func_frame) when it was emitted with emitProlog/
  //! emitEpilog, or FrameDescription::frame_pointer / frameless. With one,
  //! C++ exceptions, backtrace(), gdb and walk_stack unwind through the
  //! function; without, they stop at it (walk_stack follows rbp instead).
  std::optional<FrameDescription> frame = std::nullopt;
};

//! Turns asmjit CodeHolders into callable code.
class Jit {
 public:
  explicit Jit(CodeHeap& heap) noexcept : heap_(heap) {}

  //! The environment to init CodeHolders with (the host).
  static asmjit::Environment environment() noexcept { return asmjit::Environment::host(); }

  //! Adds one function: allocate, relocate, write once, sync, then register it
  //! (code registry, and perf map / jitdump when on) under `info.name`.
  //! `window`: where the code may lie (e.g. within rel32 reach of the targets
  //! it calls, see patcher::code_window); kOutOfMemory when no room there.
  //! Returns its address.
  Result<void*> add(asmjit::CodeHolder& code, const JitFunctionInfo& info = {}, AddressWindow window = {});

  //! Adds several functions with one write per arena touched and one sync in all.
  //! `infos` is empty (every function unnamed) or holds one entry per code.
  //! All or nothing: on error nothing stays allocated.
  //! `window` as for add, for all of them.
  Result<std::vector<void*>> add_batch(std::span<asmjit::CodeHolder* const> codes,
                                       std::span<const JitFunctionInfo> infos = {}, AddressWindow window = {});

  //! Releases code returned by add/add_batch: unregisters it from every tool,
  //! then frees it. The caller guarantees no thread runs it any more.
  Status release(void* function);

  //! Releases several functions at once (one write per contiguous run, see CodeHeap::free_batch).
  Status release_batch(std::span<void* const> functions);

  //! Typed convenience: `auto fn = jit.add_as<int(*)(int)>(code, {"square"});`
  template <class Fn>
  Result<Fn> add_as(asmjit::CodeHolder& code, const JitFunctionInfo& info = {}) {
    auto r = add(code, info);
    if (!r) return tl::unexpected<Error>(std::move(r).error());
    return reinterpret_cast<Fn>(*r);
  }

  CodeHeap& heap() const noexcept { return heap_; }

 private:
  CodeHeap& heap_;
};

}  // namespace punch::runtime
