// minivm's interpreter tier: a switch over the bytecode, with registers in
// the thread's value stack. Property accesses look the name up in the
// object's shape every time (the JIT's inline caches remember the answer).
#pragma once

#include "runtime_state.hpp"

namespace minivm {

//! Runs `f` from instruction `pc` to its return, with its registers at
//! `regs` as they are (a call starts at pc 0; a deopt resumes mid-function).
//! On a run-time error, sets the thread's error and returns 0.
Value interpret(ThreadState& t, FunctionState& f, Value* regs, int pc);

}  // namespace minivm
