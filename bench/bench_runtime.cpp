// Runtime benchmarks, side by side in one run (compare the Time column: wall clock):
//   BM_Write/<method>/<bytes>[/busy]   one CodeWriter::write, optionally with a second thread running code
//   BM_Emit/punch                      assemble + Jit::add + release of one tiny function
//   BM_EmitBatch/punch/<n>             n functions per Jit::add_batch (one write, one sync) + release_batch
//   BM_Emit/asmjit_jitruntime          the same with asmjit's JitRuntime (RWX or dual-mapped; reference only)
//   BM_EmitBatch/asmjit_jitruntime/<n> n holders assembled, then each added to JitRuntime, then released:
//                                      the batch rows' memory pattern (n holders live at once) for JitRuntime
#include <asmjit/x86.h>
#include <benchmark/benchmark.h>

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "busy_caller.hpp"
#include <punch/runtime/jit.hpp>

namespace {

using namespace punch::runtime;

// Keeps another core busy running code of this binary (not the pages being
// written: under mprotect they are briefly not executable).
unsigned spin() {
  unsigned x = 1;
  for (int i = 0; i < 1000; ++i) x = x * 1664525u + 1013904223u;
  return x;
}

void write_bytes(benchmark::State& state, WriteMethod method, std::size_t bytes, bool busy) {
  auto writer = CodeWriter::create(method);
  if (!writer) {
    state.SkipWithError(writer.error().describe().c_str());
    return;
  }
  auto region = (*writer)->map_code(bytes + 4096);
  if (!region) {
    state.SkipWithError(region.error().describe().c_str());
    return;
  }
  std::vector<std::uint8_t> payload(bytes, 0x90);
  std::optional<punch::bench::BusyCaller> other;
  other.emplace(busy, [] { benchmark::DoNotOptimize(spin()); });
  const std::uint64_t before = other->calls();
  for (auto _ : state) {
    if (!(*writer)->write(region->address + 16, payload)) {
      state.SkipWithError("write failed");
      break;
    }
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes));
  other->report(state, before);
  other.reset();
  (void)(*writer)->unmap_code(*region);
}

// int f(int x) { return x + k; }, assembled into `code`. Holders are reused
// with a soft reset (as a JIT would), in every emit benchmark alike: freeing
// their zone memory each round makes glibc trim and regrow its heap, which
// measures malloc, not code emission.
void assemble(asmjit::CodeHolder& code, int k) {
  code.reset();
  code.init(asmjit::Environment::host());
  asmjit::x86::Assembler a(&code);
  a.mov(asmjit::x86::eax, k);
  a.add(asmjit::x86::eax, asmjit::x86::edi);
  a.ret();
}

void BM_Emit_punch(benchmark::State& state) {
  auto heap = CodeHeap::global();
  if (!heap) {
    state.SkipWithError(heap.error().describe().c_str());
    return;
  }
  Jit jit(**heap);
  int k = 0;
  asmjit::CodeHolder code;
  for (auto _ : state) {
    assemble(code, ++k);
    auto fn = jit.add(code);
    if (!fn || !jit.release(*fn)) {
      state.SkipWithError("emit failed");
      break;
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

void BM_EmitBatch_punch(benchmark::State& state, std::size_t n) {
  auto heap = CodeHeap::global();
  if (!heap) {
    state.SkipWithError(heap.error().describe().c_str());
    return;
  }
  Jit jit(**heap);
  int k = 0;
  std::vector<asmjit::CodeHolder> codes(n);
  std::vector<asmjit::CodeHolder*> pointers;
  for (auto& code : codes) pointers.push_back(&code);
  for (auto _ : state) {
    for (auto& code : codes) assemble(code, ++k);
    auto fns = jit.add_batch(pointers);
    if (!fns || !jit.release_batch(*fns)) {
      state.SkipWithError("batch emit failed");
      break;
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
  const HeapStats stats = (**heap).stats();
  state.counters["heap_fragments"] = static_cast<double>(stats.fragments);
  state.counters["heap_arenas"] = static_cast<double>(stats.arenas);
  state.counters["heap_live"] = static_cast<double>(stats.allocations);
}

void BM_Emit_asmjit_jitruntime(benchmark::State& state) {
  asmjit::JitRuntime runtime;  // The reference only: punch never uses it for its own memory.
  int k = 0;
  asmjit::CodeHolder code;
  for (auto _ : state) {
    assemble(code, ++k);
    int (*fn)(int) = nullptr;
    if (runtime.add(&fn, &code) != asmjit::kErrorOk) {
      state.SkipWithError("JitRuntime::add failed");
      break;
    }
    runtime.release(fn);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

// Like BM_EmitBatch_punch (n holders assembled, then added, then released),
// with JitRuntime: holding n CodeHolders at once costs malloc more than
// reusing one (their buffers are freed n in a row), in both rows alike.
void BM_EmitBatch_asmjit_jitruntime(benchmark::State& state, std::size_t n) {
  asmjit::JitRuntime runtime;
  int k = 0;
  std::vector<asmjit::CodeHolder> codes(n);
  std::vector<int (*)(int)> fns(n);
  for (auto _ : state) {
    for (auto& code : codes) assemble(code, ++k);
    for (std::size_t i = 0; i < n; ++i) {
      if (runtime.add(&fns[i], &codes[i]) != asmjit::kErrorOk) {
        state.SkipWithError("JitRuntime::add failed");
        return;
      }
    }
    for (auto fn : fns) runtime.release(fn);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

[[maybe_unused]] const bool registered = [] {
  for (WriteMethod method : {WriteMethod::kProcMem, WriteMethod::kDualMap, WriteMethod::kMprotect}) {
    for (std::size_t bytes : {std::size_t{8}, std::size_t{65536}}) {
      for (bool busy : {false, true}) {
        std::string name =
            "BM_Write/" + std::string(to_string(method)) + "/" + std::to_string(bytes) + (busy ? "/busy" : "");
        benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& s) { write_bytes(s, method, bytes, busy); });
      }
    }
  }
  benchmark::RegisterBenchmark("BM_Emit/punch", BM_Emit_punch);
  for (std::size_t n : {16, 256, 1024})
    benchmark::RegisterBenchmark(("BM_EmitBatch/punch/" + std::to_string(n)).c_str(),
                                 [n](benchmark::State& s) { BM_EmitBatch_punch(s, n); });
  benchmark::RegisterBenchmark("BM_Emit/asmjit_jitruntime", BM_Emit_asmjit_jitruntime);
  benchmark::RegisterBenchmark("BM_EmitBatch/asmjit_jitruntime/1024",
                               [](benchmark::State& s) { BM_EmitBatch_asmjit_jitruntime(s, 1024); });
  return true;
}();

}  // namespace
