// A program for gdb in batch mode (gdb_jit.sh): JIT code gdb must name and
// unwind through, and JIT code it must forget once released.
#include <punch/runtime/code_heap.hpp>
#include <punch/runtime/gdb_jit.hpp>
#include <punch/runtime/jit.hpp>

#include <asmjit/x86.h>

#include <cstdint>
#include <cstdio>

using namespace punch::runtime;

extern "C" {
// Read by gdb (`info symbol`), so kept in the program's data.
[[gnu::used]] volatile std::uintptr_t g_released_address = 0;

[[gnu::noinline]] void jit_debug_callee(int value) {
  asm volatile("" ::"r"(value) : "memory");
  std::printf("gdb_jit_target: callee got %d\n", value);
}
[[gnu::noinline]] void checkpoint_before_release() { asm volatile(""); }
[[gnu::noinline]] void checkpoint_after_release() { asm volatile(""); }
}

namespace {

// void jit_calls_back(int x) { jit_debug_callee(x + 1); } with asmjit's prologue and epilogue.
bool emit_calls_back(asmjit::CodeHolder& code, JitFunctionInfo& info) {
  using namespace asmjit;
  code.init(Jit::environment());
  x86::Assembler a(&code);
  FuncDetail func;
  func.init(FuncSignatureT<void, int>(CallConvId::kHost), Environment::host());
  FuncFrame frame;
  frame.init(func);
  frame.setPreservedFP();
  frame.setFuncCalls();
  frame.addDirtyRegs(x86::rbx);
  frame.finalize();
  const auto prolog = static_cast<std::uint32_t>(a.offset());
  a.emitProlog(frame);
  a.lea(x86::edi, x86::ptr(x86::edi, 1));
  a.mov(x86::rax, imm(reinterpret_cast<std::uint64_t>(&jit_debug_callee)));
  a.call(x86::rax);
  const auto epilog = static_cast<std::uint32_t>(a.offset());
  a.emitEpilog(frame);
  auto described = FrameDescription::from_func_frame(frame, prolog, std::span(&epilog, 1));
  if (!described) return false;
  info.frame = std::move(*described);
  return true;
}

// void jit_frameless_calls_back(int x) { jit_debug_callee(x); } without a frame
// pointer: sub rsp, 8 / call / add rsp, 8. gdb cannot guess its frame; only
// the .eh_frame in the object tells it the caller is at rsp + 16.
void emit_frameless(asmjit::CodeHolder& code, JitFunctionInfo& info) {
  using namespace asmjit;
  code.init(Jit::environment());
  x86::Assembler a(&code);
  a.sub(x86::rsp, 8);
  const auto adjusted = static_cast<std::uint32_t>(a.offset());
  a.mov(x86::rax, imm(reinterpret_cast<std::uint64_t>(&jit_debug_callee)));
  a.call(x86::rax);
  a.add(x86::rsp, 8);
  const auto restored = static_cast<std::uint32_t>(a.offset());
  a.ret();
  FrameDescription frame = FrameDescription::frameless(8, adjusted);
  frame.steps.push_back({restored, FrameDescription::Step::Op::kAdjustStack, 0, -8});
  info.frame = std::move(frame);
}

}  // namespace

int main() {
  if (!gdb_jit_enabled()) std::puts("gdb_jit_target: PUNCH_GDB=1 is not set; registering anyway");
  set_gdb_jit_enabled(true);
  auto heap = CodeHeap::global();
  if (!heap) return std::printf("gdb_jit_target: %s\n", heap.error().describe().c_str()), 1;
  Jit jit(**heap);

  asmjit::CodeHolder calls_back, frameless, released;
  JitFunctionInfo info{"jit_calls_back"}, frameless_info{"jit_frameless_calls_back"};
  if (!emit_calls_back(calls_back, info)) return 1;
  emit_frameless(frameless, frameless_info);
  released.init(Jit::environment());
  asmjit::x86::Assembler(&released).ret();
  asmjit::CodeHolder* codes[] = {&calls_back, &frameless, &released};
  const JitFunctionInfo infos[] = {std::move(info), std::move(frameless_info), {"jit_released_fn"}};
  auto fns = jit.add_batch(codes, infos);
  if (!fns) return std::printf("gdb_jit_target: %s\n", fns.error().describe().c_str()), 1;

  reinterpret_cast<void (*)(int)>((*fns)[0])(41);
  reinterpret_cast<void (*)(int)>((*fns)[1])(7);
  g_released_address = reinterpret_cast<std::uintptr_t>((*fns)[2]);
  checkpoint_before_release();
  if (!jit.release((*fns)[2])) return 1;
  checkpoint_after_release();
  std::printf("gdb_jit_target: %zu object(s) registered with gdb\n", gdb_jit_object_count());
  return 0;
}
