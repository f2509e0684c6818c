// Building out-of-line copies: where a thread goes when it meets a site in
// flight, and where the thread fix-up moves a thread found inside a
// multi-instruction site. (Which sites need none: trap_emulation.hpp; freeing
// them: copy_reclamation.hpp.)
#pragma once

#include <memory>
#include <span>

#include <punch/result.hpp>

#include "checked_site.hpp"
#include "flight_table.hpp"

namespace punch::patcher::live {

//! Bytes a copy may add after the relocated instructions: an absolute jmp back
//! (a final call's push and jump are in disasm::relocated_size_bound).
constexpr std::size_t kCopyTailBound = 14;

//! Builds the generation for moving `sites` from their `from` to their `to`
//! bytes: relocates each code site's old instructions (or, for a one-
//! instruction site whose old code cannot move, its new instruction) into one
//! heap block near the sites, each copy ending in a jump back to the site's
//! end; writes the block with one write. Instructions that run anywhere are
//! copied as they are (no relocation). Nothing is published yet.
Result<std::unique_ptr<Generation>> build_generation(const CheckedBatch& batch, TrapInstruction trap);

//! Whether a commit of `sites` (as memory is now) would pass validation and
//! find out-of-line copies for them: validates, builds the copies, frees them.
//! Writes no site. Lets an operation that only prepares a later commit (a hook
//! installed disabled) refuse now what that commit would refuse.
Status check_copies(std::span<const Site> sites, const TransactionOptions& options);

}  // namespace punch::patcher::live
