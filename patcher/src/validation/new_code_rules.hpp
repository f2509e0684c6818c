// What a site's replacement code must be: whole instructions, no call before
// the last, and, when it is more than one instruction, undoable live (it can
// run out of line, with heap memory in reach of its RIP-relative operands).
#pragma once

#include <cstdint>
#include <span>

#include <punch/disasm/instruction.hpp>
#include <punch/result.hpp>

#include "checked_site.hpp"
#include "site_containers.hpp"

namespace punch::patcher::live {

// A branch of one site's new code to a point strictly inside another site of
// its container: new code that branches into another site could not be undone
// live (a thread there during the revert would land inside code being
// rewritten), so the commit refuses it.
struct BranchIntoSite {
  const CheckedSite* into = nullptr;  // Null: none found.
  const CheckedSite* from = nullptr;
  std::uintptr_t branch = 0, target = 0;
};

// Checks the new bytes of a code site: whole instructions, no call before the
// last, undoable live. Decodes once and without allocating (not at all when
// `known` holds its instructions), and notes in `first_into` the first branch
// into another of `others` (null: not checked); disasm's own checks give the
// exact message when something is wrong.
Status check_new_code(CheckedSite& c, std::span<const disasm::Instruction> known, const Members* others, CopyRoom room,
                      BranchIntoSite& first_into);

}  // namespace punch::patcher::live
