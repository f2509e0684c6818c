// minivm's baseline JIT: one pass over a function's bytecode, emitting x86-64
// with asmjit, registers kept in the thread's value stack (rbx points at the
// frame, r12 at the JitThread).
//
// What later changes is emitted through patch_sites.hpp: each property access
// is an inline cache of InlineCache::kWays (shape id, slot offset) pairs of
// patchable immediates, each call a patchable `call rel32` to the callee's
// code or interpreter stub, each read of a global a guard followed by the
// global's value as a constant, and the entry a guard the VM trips when it
// retires the version. Every type check and every tripped guard exits to the
// interpreter at that instruction (a deopt): registers live in memory, so the
// instruction index is all the state the interpreter needs.
#pragma once

#include <memory>

#include <punch/result.hpp>
#include <punch/runtime/jit.hpp>

#include "runtime_state.hpp"

namespace minivm {

//! Compiles `f` into a new code version. Reads the VM's globals and the
//! callees' current entries: the caller holds the patch lock.
punch::Result<std::unique_ptr<CodeVersion>> compile_function(Vm& vm, FunctionState& f, punch::runtime::Jit& jit);

}  // namespace minivm
