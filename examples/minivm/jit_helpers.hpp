// The C++ functions minivm's JIT code calls (System V ABI, plain arguments).
#pragma once

#include "runtime_state.hpp"

namespace minivm::jit_helpers {

//! The target of a function's interpreter stub (which passes `f` in rdx).
Value call_interpreted(Value* regs, JitThread* t, FunctionState* f);
//! A deopt exit: finishes the function in the interpreter from `pc`.
Value deopt(JitThread* t, FunctionState* f, Value* regs, int pc);
Value get_miss(JitThread* t, InlineCache* cache, Value object);
void set_miss(JitThread* t, InlineCache* cache, Value object, Value v);
Value new_object(JitThread* t);
void write_global(JitThread* t, int global, Value v);

}  // namespace minivm::jit_helpers
