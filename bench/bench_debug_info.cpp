// Debugger and unwinder integration costs, side by side in one run:
//   BM_DebugInfo_EmitBatch/<integration>/<n>  Jit::add_batch + release_batch of n small functions with
//       off     no frame description, gdb interface off (the baseline)
//       unwind  a FrameDescription each: libgcc __register_frame + walk_stack's table, deregistered on release
//       gdb     the gdb JIT interface on (an in-memory ELF per batch; no debugger attached)
//       both    unwind + gdb
//   BM_DebugInfo_Throw/<registered>   a C++ exception thrown and caught through 3 C++ frames while
//       <registered> JIT functions are registered with libgcc (libgcc 12 searches its registered
//       objects before the loaded ones, one by one)
//   BM_DebugInfo_WalkStack            walk_stack from the current frame, up to 64 frames
#include <asmjit/x86.h>
#include <benchmark/benchmark.h>

#include <stdexcept>
#include <vector>

#include <punch/runtime/gdb_jit.hpp>
#include <punch/runtime/jit.hpp>
#include <punch/runtime/stack_walk.hpp>

namespace {

using namespace punch::runtime;

// void f() { push rbp; mov rbp, rsp; ...; pop rbp; ret } : a frame-pointer function.
void assemble(asmjit::CodeHolder& code, int k) {
  using namespace asmjit;
  code.reset();
  code.init(Environment::host());
  x86::Assembler a(&code);
  a.push(x86::rbp);
  a.mov(x86::rbp, x86::rsp);
  a.mov(x86::eax, k);
  a.pop(x86::rbp);
  a.ret();
}
const std::uint32_t kRbpPopped = 10;  // push rbp (1) + mov (3) + mov eax (5) + pop rbp (1)

enum Integration { kOff, kUnwind, kGdb, kBoth };

void BM_DebugInfo_EmitBatch(benchmark::State& state, Integration integration, std::size_t n) {
  auto heap = CodeHeap::global();
  if (!heap) {
    state.SkipWithError(heap.error().describe().c_str());
    return;
  }
  Jit jit(**heap);
  const bool gdb_was = gdb_jit_enabled();
  set_gdb_jit_enabled(integration == kGdb || integration == kBoth);
  std::vector<asmjit::CodeHolder> codes(n);
  std::vector<asmjit::CodeHolder*> pointers;
  for (auto& code : codes) pointers.push_back(&code);
  std::vector<JitFunctionInfo> infos(n);
  for (std::size_t i = 0; i < n; ++i) {
    infos[i].name = "bench_function";
    if (integration == kUnwind || integration == kBoth)
      infos[i].frame = FrameDescription::frame_pointer(0, std::span(&kRbpPopped, 1));
  }
  int k = 0;
  for (auto _ : state) {
    for (auto& code : codes) assemble(code, ++k);
    auto fns = jit.add_batch(pointers, infos);
    if (!fns || !jit.release_batch(*fns)) {
      state.SkipWithError("batch emit failed");
      break;
    }
  }
  set_gdb_jit_enabled(gdb_was);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

[[gnu::noinline]] void thrower(int depth) {
  if (depth == 0) throw std::runtime_error("bench");
  thrower(depth - 1);
  benchmark::ClobberMemory();
}

void BM_DebugInfo_Throw(benchmark::State& state, std::size_t registered) {
  auto heap = CodeHeap::global();
  if (!heap) {
    state.SkipWithError(heap.error().describe().c_str());
    return;
  }
  Jit jit(**heap);
  std::vector<void*> live;
  asmjit::CodeHolder code;
  for (std::size_t i = 0; i < registered; ++i) {
    assemble(code, static_cast<int>(i));
    auto fn = jit.add(code, {"registered", FrameDescription::frame_pointer(0, std::span(&kRbpPopped, 1))});
    if (!fn) {
      state.SkipWithError(fn.error().describe().c_str());
      return;
    }
    live.push_back(*fn);
  }
  for (auto _ : state) {
    try {
      thrower(3);
    } catch (const std::runtime_error&) {
      benchmark::ClobberMemory();
    }
  }
  (void)jit.release_batch(live);
}

void BM_DebugInfo_WalkStack(benchmark::State& state) {
  std::uintptr_t out[64];
  for (auto _ : state) benchmark::DoNotOptimize(walk_stack(out));
}

BENCHMARK_CAPTURE(BM_DebugInfo_EmitBatch, off/16, kOff, 16);
BENCHMARK_CAPTURE(BM_DebugInfo_EmitBatch, unwind/16, kUnwind, 16);
BENCHMARK_CAPTURE(BM_DebugInfo_EmitBatch, gdb/16, kGdb, 16);
BENCHMARK_CAPTURE(BM_DebugInfo_EmitBatch, both/16, kBoth, 16);
BENCHMARK_CAPTURE(BM_DebugInfo_EmitBatch, off/1, kOff, 1);
BENCHMARK_CAPTURE(BM_DebugInfo_EmitBatch, both/1, kBoth, 1);
BENCHMARK_CAPTURE(BM_DebugInfo_Throw, 0, 0);
BENCHMARK_CAPTURE(BM_DebugInfo_Throw, 100, 100);
BENCHMARK_CAPTURE(BM_DebugInfo_Throw, 1000, 1000);
BENCHMARK(BM_DebugInfo_WalkStack);

}  // namespace
