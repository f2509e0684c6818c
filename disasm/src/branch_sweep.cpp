// The branch sweep: a linear decode of a stretch of code, keeping direct branches.
#include <punch/disasm/branch_sweep.hpp>

#include "zydis_decode.hpp"

namespace punch::disasm {

SweepCounts sweep_direct_branches(CodeSpan code, std::vector<DirectBranch>& out) {
  // Zydis's minimal mode is enough: the length and the raw immediates say
  // everything a sweep needs, and decoding no operands is a third of the work.
  const ZydisDecoder& decoder = detail::minimal_decoder();
  SweepCounts counts;
  ZydisDecoderContext context;
  ZydisDecodedInstruction insn;
  for (std::size_t offset = 0; offset < code.bytes.size();) {
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
