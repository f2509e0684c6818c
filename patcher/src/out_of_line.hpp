// Out-of-line copies: where a thread goes when it meets a site in flight, and
// where the thread fix-up moves a thread found inside a multi-instruction site.
#pragma once

#include <chrono>
#include <memory>
#include <span>

#include <punch/result.hpp>

#include "flight_table.hpp"
#include "checked_site.hpp"

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

//! Waits, up to `timeout`, until no thread is inside `generation`'s copies.
//! A run that sent threads into its copies (a trap while in flight, the
//! fix-up round) calls it before returning: a copy ends in jumps to whatever
//! the code it copies jumps to (the old target of a retargeted `jmp`, a
//! removed hook's trampoline), and a caller that frees that code once the
//! patch returned checks only for threads inside it, not inside a copy.
//! Best effort: a thread still inside at the deadline (stopped, or blocking
//! every signal) is left there, and the generation stays until reclaimed.
void drain_copies(const Generation& generation, std::chrono::milliseconds timeout);

//! Frees a generation's copy blocks (it must be unpublished, or never published).
void free_copies(Generation& generation);

//! Frees every draining generation that no thread can still be using: one
//! runtime::ranges_in_use rendezvous checks each thread's rip against the
//! copies; a thread that does not answer must be provably blocked in a syscall
//! outside them. Call under the live lock. Returns how many generations are retained.
Result<std::size_t> reclaim_generations(std::chrono::milliseconds timeout);

//! Whether enough generations are draining that a commit should reclaim them
//! first. A reclamation costs one rendezvous (with a busy thread on another
//! CPU, a signal round trip of ~0.1 ms here, a hundred times a sync), so it is
//! amortized over many commits: 3/4 of the slots, or 1 MiB of copies.
bool reclaim_due();

}  // namespace punch::patcher::live
