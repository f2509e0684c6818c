// What naming code costs: Jit::add_batch with the perf map / jitdump on vs
// off (same run), and the code registry's lookup and update.
#include <benchmark/benchmark.h>

#include <asmjit/x86.h>
#include <unistd.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <punch/runtime/code_heap.hpp>
#include <punch/runtime/code_registry.hpp>
#include <punch/runtime/jit.hpp>
#include <punch/runtime/jitdump.hpp>
#include <punch/runtime/perf_map.hpp>

#include "code_events.hpp"

namespace {

using namespace punch::runtime;

void assemble(asmjit::CodeHolder& code, int k) {
  code.reset();
  code.init(asmjit::Environment::host());
  asmjit::x86::Assembler a(&code);
  a.mov(asmjit::x86::eax, k);
  a.add(asmjit::x86::eax, asmjit::x86::edi);
  a.ret();
}

enum class Tools { kOff, kPerfMap, kJitdump, kBoth };

// add_batch + release_batch of n named functions with the given tools on.
void BM_NamedBatch(benchmark::State& state, Tools tools, std::size_t n) {
  auto heap = CodeHeap::global();
  if (!heap) return state.SkipWithError(heap.error().describe().c_str());
  const bool perf_map = tools == Tools::kPerfMap || tools == Tools::kBoth;
  const bool jitdump = tools == Tools::kJitdump || tools == Tools::kBoth;
  if (perf_map && !enable_perf_map()) return state.SkipWithError("perf map");
  if (jitdump && !enable_jitdump("/tmp")) return state.SkipWithError("jitdump");
  Jit jit(**heap);
  std::vector<asmjit::CodeHolder> codes(n);
  std::vector<asmjit::CodeHolder*> pointers;
  std::vector<std::string> names;
  std::vector<JitFunctionInfo> infos;
  for (std::size_t i = 0; i < n; ++i) {
    pointers.push_back(&codes[i]);
    names.push_back("bench_function_" + std::to_string(i));
  }
  for (const std::string& name : names) infos.push_back({name});
  int k = 0;
  for (auto _ : state) {
    for (auto& code : codes) assemble(code, ++k);
    auto fns = jit.add_batch(pointers, infos);
    if (!fns || !jit.release_batch(*fns)) {
      state.SkipWithError("batch emit failed");
      break;
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
  // The files grow with every iteration: remove them.
  const std::string map = perf_map_path(), dump = jitdump_path();
  disable_perf_map();
  disable_jitdump();
  if (!map.empty()) ::unlink(map.c_str());
  if (!dump.empty()) ::unlink(dump.c_str());
}

// `live` fake entries of 128 bytes registered, far from any real code (the
// registry never reads the memory it names; jitdump, which would, is off).
constexpr std::uintptr_t kFakeBase = 0x100000000000;
constexpr std::size_t kFakeSize = 128;

void register_fakes(std::size_t live) {
  std::vector<code_events::AddedCode> batch;
  for (std::size_t i = 0; i < live; ++i)
    batch.push_back({kFakeBase + i * kFakeSize, kFakeSize, "fake", CodeKind::kOther, {}, {}});
  code_events::code_added(batch);
}

void unregister_fakes(std::size_t live) { unregister_code(kFakeBase, live * kFakeSize); }

void BM_FindCode(benchmark::State& state, std::size_t live) {
  register_fakes(live);
  std::mt19937_64 rng(1);
  std::vector<std::uintptr_t> probes(4096);
  for (auto& p : probes) p = kFakeBase + rng() % (live * kFakeSize);
  std::size_t i = 0, found = 0;
  CodeInfo info;
  for (auto _ : state) {
    found += find_code(probes[i++ & 4095], info);
    benchmark::DoNotOptimize(info);
  }
  if (static_cast<benchmark::IterationCount>(found) != state.iterations())
    state.SkipWithError("a registered address was not found");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  unregister_fakes(live);
}

// One entry registered and removed again with `live` others in the registry.
void BM_RegisterRelease(benchmark::State& state, std::size_t live) {
  register_fakes(live);
  const std::uintptr_t extra = kFakeBase + live * kFakeSize;
  for (auto _ : state) {
    register_code(extra, kFakeSize, "extra", CodeKind::kOther);
    unregister_code(extra, kFakeSize);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  unregister_fakes(live);
}

// What the registry alone adds to BM_NamedBatch/256/off: 256 entries
// announced in one batch and released in one call (every sink runs; the
// tools are off).
void BM_RegistryBatch(benchmark::State& state, std::size_t n) {
  std::vector<std::string> names;
  for (std::size_t i = 0; i < n; ++i) names.push_back("bench_function_" + std::to_string(i));
  std::vector<code_events::AddedCode> batch;
  for (std::size_t i = 0; i < n; ++i)
    batch.push_back({kFakeBase + i * kFakeSize, kFakeSize, names[i], CodeKind::kJit, {}, {}});
  for (auto _ : state) {
    code_events::code_added(batch);
    code_events::code_released(kFakeBase, n * kFakeSize);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

[[maybe_unused]] const bool registered = [] {
  const std::pair<const char*, Tools> modes[] = {
      {"off", Tools::kOff}, {"perf_map", Tools::kPerfMap}, {"jitdump", Tools::kJitdump}, {"both", Tools::kBoth}};
  for (const auto& [name, tools] : modes)
    benchmark::RegisterBenchmark((std::string("BM_NamedBatch/256/") + name).c_str(),
                                 [tools = tools](benchmark::State& s) { BM_NamedBatch(s, tools, 256); });
  benchmark::RegisterBenchmark("BM_RegistryBatch/256", [](benchmark::State& s) { BM_RegistryBatch(s, 256); });
  for (std::size_t live : {16, 1024, 65536}) {
    benchmark::RegisterBenchmark(("BM_FindCode/live:" + std::to_string(live)).c_str(),
                                 [live](benchmark::State& s) { BM_FindCode(s, live); });
    benchmark::RegisterBenchmark(("BM_RegisterRelease/live:" + std::to_string(live)).c_str(),
                                 [live](benchmark::State& s) { BM_RegisterRelease(s, live); });
  }
  return true;
}();

}  // namespace
