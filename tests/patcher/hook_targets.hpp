// The functions of hook_targets.S (long f(long x), known entries) and how the
// hook tests call a function so the compiler can neither inline nor fold it.
#pragma once

extern "C" {
long hook_target_prologue(long);  // endbr64 + multi-instruction prologue: 3x + 7.
long hook_target_square(long);    // no endbr64, multi-instruction prologue: x * x - 1.
long hook_target_pad_nop5(long);  // patchable entry, one 5-byte nop: x + 100.
long hook_target_pad_gcc(long);   // endbr64 + five 1-byte nops: x + 200.
long hook_target_call_mid(long);  // an indirect call that is not the last stolen instruction (never called).
long hook_target_load(long);      // loads the quadword at [x] and adds 1 (the load is stolen).
long hook_parking_detour(long);   // parks a thread inside itself until hook_parking_go, then original + 1000.
extern void* hook_parking_original;
extern unsigned char hook_parking_arrived;
extern unsigned char hook_parking_go;
}

namespace punch::patcher {

using Fn = long (*)(long);

//! Calls `f` through a volatile pointer.
inline long call(Fn f, long x) {
  Fn volatile p = f;
  return p(x);
}

}  // namespace punch::patcher
