// The thread fix-up round of multi-instruction sites (before step 2).
#pragma once

#include <chrono>

#include <punch/result.hpp>
#include <punch/runtime/threads.hpp>

#include "flight_table.hpp"

namespace punch::patcher::live {

//! Signals every other thread; each moves its own saved rip, if it lies
//! strictly inside a multi-instruction site of `generation`, to the same
//! instruction in the site's out-of-line copy, and executes a serializing
//! instruction (so the round also serves as a sync for every thread that
//! answers). A thread asleep in a system call is not signalled, and a thread
//! that does not answer within `timeout` is accepted, only if it is provably
//! blocked in a system call whose address is not strictly inside any site;
//! otherwise a kTimeout error names it. Returns how many threads were
//! accepted that way (they did not serialize). Never waits longer than the
//! rendezvous bound.
Result<std::size_t> move_threads_out_of_sites(const Generation& generation, std::chrono::milliseconds timeout);

//! The same for threads held still (runtime::ThreadHold): each held thread's
//! saved rip is checked and moved by the caller, no signal is sent; each
//! sleeper is looked at again (one that woke since is held now) and must be
//! blocked outside every site, or a kTimeout error names it. Held threads
//! serialize when released; the caller still syncs for any other thread.
Status move_held_threads_out_of_sites(const Generation& generation, runtime::ThreadHold& hold,
                                      std::chrono::milliseconds timeout);

//! Whether any site of the generation needs the round (old code of several instructions).
bool needs_fixup(const Generation& generation) noexcept;

}  // namespace punch::patcher::live
