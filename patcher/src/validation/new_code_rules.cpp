#include "new_code_rules.hpp"

#include <punch/disasm/instruction_facts.hpp>
#include <punch/disasm/relocate.hpp>
#include <punch/disasm/validate.hpp>
#include <punch/runtime/code_heap.hpp>

#include "out_of_line.hpp"
#include "site_messages.hpp"

namespace punch::patcher::live {

Status check_new_code(CheckedSite& c, std::span<const disasm::Instruction> known, const Members* others, CopyRoom room,
                      BranchIntoSite& first_into) {
  const disasm::CodeSpan code{c.address, c.to};
  std::uint32_t count = 0;
  bool plain = true, decoded = true;
  // Where an out-of-line copy of the new code (needed to undo it live) could
  // live: within rel32 reach of the site and of every RIP-relative operand.
  runtime::AddressWindow copy_window =
      runtime::AddressWindow::rel32_reach(c.address).intersect(runtime::AddressWindow::rel32_reach(c.end()));
  std::uintptr_t far_operand = 0, indirect_jump = 0;
  bool reads_data = false;
  for (std::uintptr_t a = c.address; a < code.end(); ++count) {
    auto insn = count < known.size() ? Result<disasm::Instruction>(known[count]) : disasm::decode(code, a);
    if (!insn) {
      decoded = false;
      break;
    }
    if (disasm::reads_data_outside(*insn, c.address, c.end())) {  // Data of the site itself moves with a copy.
      reads_data = true;
      copy_window = copy_window.intersect(runtime::AddressWindow::rel32_reach(insn->memory_target));
      if (copy_window.empty() && !far_operand) far_operand = insn->address;
    }
    // A thread returning from a call before the last instruction would land
    // inside the range after it changed (it is not "inside" when we look).
    if (auto s = disasm::check_call_is_last(code, *insn, c.end()); !s)
      return fail(with_site(c.index, c.address, std::move(s).error().with_context("its new code")));
    if (insn->has_branch_target && others && !first_into.into) {
      const CheckedSite* into = others->holding(insn->branch_target);
      if (into && insn->branch_target != into->address && into != &c)
        first_into = {into, &c, insn->address, insn->branch_target};
    }
    // As the branch scan sees it: a jump through a slot in these very bytes (the absolute entry) is a known one.
    const bool own_slot = insn->has_memory_target && insn->memory_target >= c.address &&
                          insn->memory_target <= c.end() && c.end() - insn->memory_target >= sizeof(std::uintptr_t);
    if (insn->flow == disasm::Flow::kIndirectJump && !own_slot && !indirect_jump) indirect_jump = insn->address;
    plain = plain && disasm::runs_anywhere(*insn);
    a = insn->end();
  }
  if (!decoded) {
    auto exact = disasm::check_replacement(code);
    if (!exact) return tl::unexpected(with_site(c.index, c.address, std::move(exact).error()));
    return site_error(ErrorCode::kInvalidArgument, c.index, c.address, "the new bytes do not decode");
  }
  c.to_instructions = count;
  c.to_plain = plain;
  c.to_indirect_jump = count > 1 ? indirect_jump : 0;
  // New code of several instructions must itself be relocatable, or undoing
  // it live (revert, or a rollback) could not move threads out of it.
  if (count > 1 && far_operand)
    return site_error(ErrorCode::kCannotRelocate, c.index, c.address,
                      "the new code could not be undone live: the RIP-relative operand at " + at(far_operand) +
                          " is too close to the edge of rel32 reach for any out-of-line copy near the site to "
                          "reach it");
  if (count > 1 && !plain)
    if (auto dry = disasm::relocate(code, c.address, {.final_call_as_jump = true}); !dry)
      return site_error(ErrorCode::kCannotRelocate, c.index, c.address,
                        "the new code could not be undone live (it cannot run out of line): " + dry.error().message);
  // Its copy must find memory in that window when the time comes: make sure
  // the heap has some there now (when reserving, an arena mapped for it
  // stays). The window can be narrow, and the address space there taken (the
  // fuzzer found such commits, whose revert was then refused).
  if (count > 1 && reads_data) {
    PUNCH_TRY_ASSIGN(runtime::CodeHeap* const heap, runtime::CodeHeap::global());
    auto bound = disasm::relocated_size_bound(code);
    const std::size_t size = (bound ? *bound : c.to.size() * 4) + kCopyTailBound;
    if (auto found = room == CopyRoom::kReserve ? heap->reserve_room(size, 16, copy_window)
                                                : heap->has_room(size, 16, copy_window);
        !found)
      return site_error(ErrorCode::kCannotRelocate, c.index, c.address,
                        "the new code could not be undone live: no memory within reach of its RIP-relative "
                        "operands for an out-of-line copy (" +
                            found.error().message + ")");
  }
  return {};
}

}  // namespace punch::patcher::live
