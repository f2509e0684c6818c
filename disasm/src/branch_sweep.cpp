// The branch sweep: a linear decode of a stretch of code, keeping direct branches.
#include <punch/disasm/branch_sweep.hpp>

#include <span>

#include "zydis_decode.hpp"

namespace punch::disasm {
namespace {

// Data compilers place among code on purpose, which a sweep steps over
// instead of decoding it as whatever it looks like (a misdecoded branch into
// a neighbour's entry made that entry unhookable): clang's
// -fsanitize=function signature. Up to clang 16 it opens the function:
// `jmp .+8`, the bytes "v2" and a 4-byte type offset; from clang 17 it is the
// 8 bytes before the entry, the magic 0xc105cafe and a type hash. Returns
// how many bytes at `at` are such a signature (0: none), and whether the
// first two are the jump, a real branch.
struct KnownData {
  std::size_t length = 0;
  bool starts_with_jump = false;
};
KnownData known_data_at(std::span<const std::uint8_t> at) {
  if (at.size() < 8) return {};
  if (at[0] == 0xEB && at[1] == 0x06 && at[2] == 0x76 && at[3] == 0x32) return {8, true};
  if (at[0] == 0xFE && at[1] == 0xCA && at[2] == 0x05 && at[3] == 0xC1) return {8, false};
  return {};
}

}  // namespace

SweepCounts sweep_direct_branches(CodeSpan code, std::vector<DirectBranch>& out) {
  // Zydis's minimal mode is enough: the length and the raw immediates say
  // everything a sweep needs, and decoding no operands is a third of the work.
  const ZydisDecoder& decoder = detail::minimal_decoder();
  SweepCounts counts;
  ZydisDecoderContext context;
  ZydisDecodedInstruction insn;
  for (std::size_t offset = 0; offset < code.bytes.size();) {
    if (const KnownData data = known_data_at(code.bytes.subspan(offset)); data.length != 0) {
      if (data.starts_with_jump) out.push_back({code.address + offset, code.address + offset + data.length});
      counts.signatures += 1;
      offset += data.length;
      continue;
    }
    const ZyanStatus status = ZydisDecoderDecodeInstruction(&decoder, &context, code.bytes.data() + offset,
                                                            code.bytes.size() - offset, &insn);
    if (!ZYAN_SUCCESS(status)) {  // Data, or the span's end cuts an instruction.
      ++counts.skipped;
      ++offset;
      continue;
    }
    ++counts.instructions;
    const std::uintptr_t next = code.address + offset + insn.length;
    for (const auto& imm : insn.raw.imm)
      if (imm.size != 0 && imm.is_relative)
        out.push_back({code.address + offset, next + static_cast<std::uintptr_t>(imm.value.s)});
    offset += insn.length;
  }
  return counts;
}

}  // namespace punch::disasm
