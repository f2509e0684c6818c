// minivm benchmarks, side by side in one run:
//   BM_Minivm/properties/{interpreter,jit}: one run of programs/properties.mvm;
//   BM_Minivm/ic_update: filling one inline-cache way (its immediate patched
//     live) against BM_Minivm/recompile: compiling the
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
  const std::uintptr_t site = cache.site[InlineCache::kWays - 1];
  const std::uint64_t filled = InlineCache::way_value(12345, slot_offset_from_tagged(1));
  std::uint64_t now = 0;
  for (auto _ : state) {
    const std::uint64_t next = now ? 0 : filled;
    if (!patch::set_imm64(site, now, next)) return state.SkipWithError("patch failed");
    now = next;
  }
  if (now && !patch::set_imm64(site, now, 0)) state.SkipWithError("restore failed");
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
