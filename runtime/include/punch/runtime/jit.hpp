// punch::runtime::Jit — asmjit code into never-writable pages.
//
// Instead of asmjit's JitRuntime (which maps RWX or MAP_SHARED memory), Jit
// allocates from a CodeHeap, relocates the CodeHolder to that address,
// flattens it into a staging buffer, and writes it with the heap's CodeWriter.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include <asmjit/core.h>

#include <punch/result.hpp>
#include <punch/runtime/code_heap.hpp>

namespace punch::runtime {

//! Turns asmjit CodeHolders into callable code.
class Jit {
 public:
  explicit Jit(CodeHeap& heap) noexcept : heap_(heap) {}

  //! The environment to init CodeHolders with (the host).
  static asmjit::Environment environment() noexcept { return asmjit::Environment::host(); }

  //! Adds one function: allocate, relocate, write once, sync. Returns its address.
  //! `window`: where the code may lie (e.g. within rel32 reach of the targets
  //! it calls, see patcher::code_window); kOutOfMemory when no room there.
  Result<void*> add(asmjit::CodeHolder& code, AddressWindow window = {});

  //! Adds several functions with one write per arena touched and one sync in all.
  //! All or nothing: on error nothing stays allocated.
  Result<std::vector<void*>> add_batch(std::span<asmjit::CodeHolder* const> codes, AddressWindow window = {});

  //! Releases code returned by add/add_batch. The caller guarantees no thread runs it any more.
  Status release(void* function);

  //! Releases several functions at once (one write per contiguous run, see CodeHeap::free_batch).
  Status release_batch(std::span<void* const> functions);

  //! Typed convenience: `auto fn = jit.add_as<int(*)(int)>(code);`
  template <class Fn>
  Result<Fn> add_as(asmjit::CodeHolder& code) {
    auto r = add(code);
    if (!r) return tl::unexpected<Error>(std::move(r).error());
    return reinterpret_cast<Fn>(*r);
  }

  CodeHeap& heap() const noexcept { return heap_; }

 private:
  CodeHeap& heap_;
};

}  // namespace punch::runtime
