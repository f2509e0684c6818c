// minivm benchmarks, side by side in one run:
//   BM_Minivm/properties/{interpreter,jit}: one run of programs/properties.mvm;
//   BM_Minivm/ic_update: filling one inline-cache way (its offset and shape
//     immediates patched live) against BM_Minivm/recompile: compiling the
//     function that holds the cache again (new code, callers retargeted, the
//     old version's entry tripped and the old code freed).
#include <benchmark/benchmark.h>

#include <fstream>
#include <sstream>

#include "assembler.hpp"
#include "patch_sites.hpp"
#include "vm.hpp"

namespace minivm {
namespace {

Program load(const char* name) {
  std::ifstream in(std::string(MINIVM_PROGRAMS_DIR) + "/" + name + ".mvm");
  std::stringstream text;
  text << in.rdbuf();
  auto program = assemble(text.str());
  return program ? std::move(*program) : Program{};
}

void run_properties(benchmark::State& state, Tier tier) {
  auto vm = Vm::create(load("properties"), tier);
  if (!vm) return state.SkipWithError(vm.error().describe().c_str());
  ThreadState t(**vm);
  if (!(*vm)->run(t)) return state.SkipWithError("the program failed");  // Warm: compiled, caches filled.
  for (auto _ : state) benchmark::DoNotOptimize((*vm)->run(t));
}

void BM_Minivm_properties_interpreter(benchmark::State& state) { run_properties(state, Tier::kInterpreter); }
void BM_Minivm_properties_jit(benchmark::State& state) { run_properties(state, Tier::kEager); }

void BM_Minivm_ic_update(benchmark::State& state) {
  auto vm = Vm::create(load("properties"), Tier::kEager);
  if (!vm) return state.SkipWithError(vm.error().describe().c_str());
  ThreadState t(**vm);
  if (!(*vm)->run(t)) return state.SkipWithError("the program failed");
  const CodeVersion* work = (*vm)->find_function("work")->current;
  const InlineCache& cache = *work->caches.front();
  // The last way is free (the program shows two shapes): fill it, then empty it, alternately.
  const int way = InlineCache::kWays - 1;
  std::uint32_t shape = 0, offset = 0;
  for (auto _ : state) {
    const std::uint32_t next_shape = shape ? 0 : 12345, next_offset = offset ? 0 : 23;
    if (!patch::set_imm32(cache.offset_site[way], offset, next_offset) ||
        !patch::set_imm32(cache.shape_site[way], shape, next_shape))
      return state.SkipWithError("patch failed");
    shape = next_shape;
    offset = next_offset;
  }
  if (shape && !patch::set_imm32(cache.shape_site[way], shape, 0)) state.SkipWithError("restore failed");
}

void BM_Minivm_recompile(benchmark::State& state) {
  auto vm = Vm::create(load("properties"), Tier::kEager);
  if (!vm) return state.SkipWithError(vm.error().describe().c_str());
  ThreadState t(**vm);
  if (!(*vm)->run(t)) return state.SkipWithError("the program failed");
  FunctionState& work = *(*vm)->find_function("work");
  for (auto _ : state) {
    if (!(*vm)->compile(work)) return state.SkipWithError("compile failed");
    (*vm)->reclaim();
  }
}

BENCHMARK(BM_Minivm_properties_interpreter)->Name("BM_Minivm/properties/interpreter")->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Minivm_properties_jit)->Name("BM_Minivm/properties/jit")->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Minivm_ic_update)->Name("BM_Minivm/ic_update")->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Minivm_recompile)->Name("BM_Minivm/recompile")->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace minivm
