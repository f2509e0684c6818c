// Function extent lookup (runtime::function_containing) from each source,
// cached and cold (the object's file mapped, checked and its .symtab sorted again).
#include <benchmark/benchmark.h>

#include <netdb.h>

#include <cstdint>

#include <punch/runtime/function_bounds.hpp>

// A function with no symbol: its FDE is the only source.
__asm__(
    "  .text\n"
    "  .p2align 4\n"
    ".Lbench_fde_only:\n"
    "  .cfi_startproc\n"
    "  leaq 1(%rdi), %rax\n"
    "  ret\n"
    "  .cfi_endproc\n"
    "  .section .data.rel.ro,\"aw\"\n"
    "  .p2align 3\n"
    "bench_fde_only_address:\n"
    "  .quad .Lbench_fde_only\n"
    "  .text\n");
extern "C" void* const bench_fde_only_address __attribute__((visibility("hidden")));

namespace {

__attribute__((noinline, used)) int bench_static_function(int x) { return x * 3 + 1; }

void look_up(benchmark::State& state, std::uintptr_t address, bool cold) {
  using punch::runtime::function_containing;
  if (!function_containing(address)) state.SkipWithError("no extent");
  for (auto _ : state) {
    if (cold) punch::runtime::drop_function_bounds_cache();
    auto bounds = function_containing(address);
    benchmark::DoNotOptimize(bounds);
  }
}

std::uintptr_t address_of(const void* p) { return reinterpret_cast<std::uintptr_t>(p) + 1; }

void BM_FunctionBounds_dynamic_symbol(benchmark::State& state) {
  look_up(state, address_of(reinterpret_cast<void*>(&::getaddrinfo)), false);
}
void BM_FunctionBounds_dynamic_symbol_cold(benchmark::State& state) {
  look_up(state, address_of(reinterpret_cast<void*>(&::getaddrinfo)), true);
}
void BM_FunctionBounds_symbol_table(benchmark::State& state) {
  look_up(state, address_of(reinterpret_cast<void*>(&bench_static_function)), false);
}
void BM_FunctionBounds_symbol_table_cold(benchmark::State& state) {
  look_up(state, address_of(reinterpret_cast<void*>(&bench_static_function)), true);
}
void BM_FunctionBounds_unwind_table(benchmark::State& state) {
  look_up(state, address_of(bench_fde_only_address), false);
}
void BM_FunctionBounds_unwind_table_cold(benchmark::State& state) {
  look_up(state, address_of(bench_fde_only_address), true);
}

BENCHMARK(BM_FunctionBounds_dynamic_symbol)->Name("BM_FunctionBounds/dynamic_symbol");
BENCHMARK(BM_FunctionBounds_dynamic_symbol_cold)->Name("BM_FunctionBounds/dynamic_symbol_cold");
BENCHMARK(BM_FunctionBounds_symbol_table)->Name("BM_FunctionBounds/symbol_table");
BENCHMARK(BM_FunctionBounds_symbol_table_cold)->Name("BM_FunctionBounds/symbol_table_cold");
BENCHMARK(BM_FunctionBounds_unwind_table)->Name("BM_FunctionBounds/unwind_table");
BENCHMARK(BM_FunctionBounds_unwind_table_cold)->Name("BM_FunctionBounds/unwind_table_cold");

}  // namespace
