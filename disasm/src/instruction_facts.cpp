#include <punch/disasm/instruction_facts.hpp>

#include <algorithm>

namespace punch::disasm {

bool falls_through(const Instruction& insn) noexcept {
  return insn.flow != Flow::kJump && insn.flow != Flow::kIndirectJump && insn.flow != Flow::kReturn &&
         insn.flow != Flow::kTrap;
}

bool is_nop(const Instruction& insn) noexcept { return insn.is_padding && insn.flow == Flow::kNone; }

bool runs_anywhere(const Instruction& insn) noexcept {
  return insn.rel_size == 0 && !insn.has_memory_target && !insn.has_branch_target && insn.flow != Flow::kCall &&
         insn.flow != Flow::kIndirectCall && insn.flow != Flow::kSyscall;
}

bool interior_reachable(CodeSpan run, std::span<const Instruction> insns) noexcept {
  if (insns.size() < 2) return false;
  const Instruction& first = insns.front();
  if (first.flow == Flow::kReturn) return false;
  if (first.flow == Flow::kJump) return first.branch_target > run.address && first.branch_target < run.end();
  return true;
}

bool may_leave(CodeSpan run, std::span<const Instruction> insns) noexcept {
  return std::any_of(insns.begin(), insns.end(), [&](const Instruction& insn) {
    if (insn.flow == Flow::kIndirectJump || insn.flow == Flow::kIndirectCall) return true;
    return insn.has_branch_target && (insn.branch_target < run.address || insn.branch_target > run.end());
  });
}

}  // namespace punch::disasm
