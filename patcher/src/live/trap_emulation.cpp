// Choosing a trap emulation: one instruction the handler can carry out
// itself (as alternative.c's int3_emulate_* do), so no copy is written and
// no thread can be inside one when the patch returns.
#include "trap_emulation.hpp"

#include <punch/disasm/instruction_facts.hpp>

namespace punch::patcher::live {

void choose_emulation(FlightSite& f, std::span<const std::uint8_t> bytes, std::span<const disasm::Instruction> insns) {
  f.emulation = Emulation::kNone;
  if (insns.empty() || (insns.size() > 1 && disasm::interior_reachable({f.address, bytes}, insns))) return;
  const disasm::Instruction& insn = insns.front();
  if (insn.flow == disasm::Flow::kJump && insn.has_branch_target) {
    f.emulation = Emulation::kJump;
    f.emulation_target = insn.branch_target;
  } else if (insns.size() > 1) {
    return;
  } else if (insn.flow == disasm::Flow::kCall && insn.has_branch_target) {
    f.emulation = Emulation::kCall;
    f.emulation_target = insn.branch_target;
  } else if (disasm::is_nop(insn)) {
    f.emulation = Emulation::kSkip;
  } else if (const auto load = disasm::immediate_load(bytes)) {
    f.emulation = Emulation::kLoad;
    f.emulation_target = load->value;
    f.emulation_register = load->reg;
  }
}

}  // namespace punch::patcher::live
