// Reclaiming out-of-line copies: waiting for threads to leave them, and
// freeing the generations no thread can still be using.
#pragma once

#include <chrono>
#include <cstddef>

#include <punch/result.hpp>

#include "flight_table.hpp"

namespace punch::patcher::live {

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
