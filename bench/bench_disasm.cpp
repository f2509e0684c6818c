// disasm: decode throughput against raw Zydis, and validation + relocation of typical prologues.
#include <benchmark/benchmark.h>

#include <cstring>
#include <vector>

#include <netdb.h>

#include <Zydis/Zydis.h>

#include <punch/disasm/relocate.hpp>
#include <punch/disasm/validate.hpp>
#include <punch/runtime/function_bounds.hpp>

namespace {

using punch::disasm::CodeSpan;

// The bytes of a large libc function (getaddrinfo: a few KiB of ordinary compiled code).
const std::vector<std::uint8_t>& libc_function(std::uintptr_t& address) {
  static std::uintptr_t start = 0;
  static const std::vector<std::uint8_t> bytes = [] {
    auto extent = punch::runtime::function_containing(reinterpret_cast<std::uintptr_t>(&::getaddrinfo));
    if (!extent) return std::vector<std::uint8_t>{};
    start = extent->start;
    std::vector<std::uint8_t> b(extent->end - extent->start);
    std::memcpy(b.data(), reinterpret_cast<const void*>(extent->start), b.size());
    return b;
  }();
  address = start;
  return bytes;
}

void BM_Decode_punch(benchmark::State& state) {
  std::uintptr_t address;
  const auto& bytes = libc_function(address);
  const CodeSpan code{address, bytes};
  std::int64_t items = 0;
  for (auto _ : state) {
    for (std::uintptr_t a = address; a < code.end();) {
      auto insn = punch::disasm::decode(code, a);
      if (!insn) break;
      benchmark::DoNotOptimize(insn->length);
      a = insn->end();
      ++items;
    }
  }
  state.SetItemsProcessed(items);
}
BENCHMARK(BM_Decode_punch)->Name("BM_Decode/punch");

void BM_Decode_zydis_raw(benchmark::State& state) {
  std::uintptr_t address;
  const auto& bytes = libc_function(address);
  ZydisDecoder decoder;
  ZydisDecoderInit(&decoder, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
  ZydisDecodedInstruction insn;
  ZydisDecodedOperand operands[ZYDIS_MAX_OPERAND_COUNT];
  std::int64_t items = 0;
  for (auto _ : state) {
    for (std::size_t off = 0; off < bytes.size();) {
      if (!ZYAN_SUCCESS(ZydisDecoderDecodeFull(&decoder, bytes.data() + off, bytes.size() - off, &insn, operands)))
        break;
      benchmark::DoNotOptimize(insn.length);
      off += insn.length;
      ++items;
    }
  }
  state.SetItemsProcessed(items);
}
BENCHMARK(BM_Decode_zydis_raw)->Name("BM_Decode/zydis_raw");

// The floor: Zydis without operand decoding (punch decodes operands only for
// instructions whose ModRM can encode a RIP-relative operand).
void BM_Decode_zydis_no_operands(benchmark::State& state) {
  std::uintptr_t address;
  const auto& bytes = libc_function(address);
  ZydisDecoder decoder;
  ZydisDecoderInit(&decoder, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
  ZydisDecodedInstruction insn;
  std::int64_t items = 0;
  for (auto _ : state) {
    for (std::size_t off = 0; off < bytes.size();) {
      if (!ZYAN_SUCCESS(
              ZydisDecoderDecodeInstruction(&decoder, nullptr, bytes.data() + off, bytes.size() - off, &insn)))
        break;
      benchmark::DoNotOptimize(insn.length);
      off += insn.length;
      ++items;
    }
  }
  state.SetItemsProcessed(items);
}
BENCHMARK(BM_Decode_zydis_no_operands)->Name("BM_Decode/zydis_no_operands");

// Validation (boundaries of a 5-byte patch) plus relocation of the instructions it covers.
void relocate_case(benchmark::State& state, std::vector<std::uint8_t> prologue, std::size_t run) {
  const std::uintptr_t address = 0x555555554000;
  const CodeSpan code{address, prologue};
  for (auto _ : state) {
    auto covered = punch::disasm::check_boundaries(code, address, address + run);
    auto relocation = punch::disasm::relocate(CodeSpan{address, std::span(prologue).first(run)}, address + 0x100000);
    benchmark::DoNotOptimize(covered);
    benchmark::DoNotOptimize(relocation);
  }
}
BENCHMARK_CAPTURE(relocate_case, endbr_frame, {0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5, 0xc3}, 5) ->Name("BM_Relocate/endbr_frame");
BENCHMARK_CAPTURE(relocate_case, frame_sub, {0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec, 0x10, 0xc3}, 8) ->Name("BM_Relocate/frame_sub");
BENCHMARK_CAPTURE(relocate_case, rip_load, {0x48, 0x8b, 0x05, 0x10, 0x00, 0x00, 0x00, 0x48, 0x01, 0xf8, 0xc3}, 7) ->Name("BM_Relocate/rip_load");
BENCHMARK_CAPTURE(relocate_case, cmp_jcc, {0x48, 0x83, 0xff, 0x05, 0x74, 0x10, 0x31, 0xc0, 0xc3}, 6) ->Name("BM_Relocate/cmp_jcc");
BENCHMARK_CAPTURE(relocate_case, push_rip_cmp_jne,
                  {0x55, 0x53, 0x83, 0x3d, 0x10, 0x00, 0x00, 0x00, 0x00, 0x75, 0x20, 0x5b, 0x5d, 0xc3}, 11) ->Name("BM_Relocate/push_rip_cmp_jne");

}  // namespace
