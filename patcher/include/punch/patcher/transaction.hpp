// punch::patcher::Transaction — validated live patches of code other threads may be running.
//
// A transaction holds sites (address, expected current bytes, new bytes). It
// validates every site against the code as it is now, then applies all of
// them with the kernel's text_poke_bp int3 protocol, paying two syncs for
// the whole batch (the kernel's third is deferred, see live_protocol.cpp). revert() restores exactly the bytes that
// were there. See docs/design.md and live_protocol.cpp for the protocol.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include <punch/disasm/validate.hpp>
#include <punch/result.hpp>

namespace punch::patcher {

//! One place to change.
struct Site {
  std::uintptr_t address = 0;
  std::vector<std::uint8_t> expected;     //!< The bytes that must be there now.
  std::vector<std::uint8_t> replacement;  //!< The bytes to put there (same length as expected).
  //! The extent of the code that holds the site, for the branch scan. When
  //! unset: the ELF symbol that holds the address, else the punch heap
  //! allocation that holds it, else a bounded scan (documented in the error).
  std::optional<disasm::FunctionExtent> function;
};

//! The byte written first over each site (step 1 of the protocol).
enum class TrapInstruction {
  kInt3,  //!< 0xCC, SIGTRAP. The default.
  kHlt,   //!< 0xF4, SIGSEGV in user mode: for patching under a debugger that owns SIGTRAP.
};

//! The trap from PUNCH_TRAP=int3|hlt (default int3). An unknown value gives
//! int3 here, and commit() and revert() refuse to run with it (kInvalidArgument).
TrapInstruction default_trap_instruction();

//! Parses "int3" or "hlt"; anything else is a kInvalidArgument error.
Result<TrapInstruction> parse_trap_instruction(std::string_view name);

struct TransactionOptions {
  TrapInstruction trap = default_trap_instruction();
  //! How long a commit waits for every thread to answer the fix-up round.
  std::chrono::milliseconds thread_timeout{1000};
  //! Hold every other thread still (paused in a signal handler) for the
  //! length of each commit and revert, so none of them meets a trap byte: a
  //! thread that has SIGTRAP blocked would be killed by the kernel there.
  //! Threads asleep in calls a signal would end with EINTR (poll, nanosleep,
  //! ...) are not signalled. A thread with its signals blocked that cannot be
  //! held within thread_timeout, or a vfork child that does not exec in that
  //! time, makes the change fail with memory unchanged.
  //! Off: threads run on and meet the trap bytes (the fast path of a VM whose
  //! own threads never block SIGTRAP). Needs membarrier; without it, off.
  bool hold_threads = true;
  //! Write policy: allow sites in mappings that are not executable (data, GOT). Off by default.
  bool allow_non_executable = false;
  //! Allow sites in functions with indirect jumps (the branch scan cannot prove them safe),
  //! and sites in code with no known extent (no Site::function, no ELF symbol, no punch
  //! heap allocation): then only the site itself is decoded, from its first byte.
  bool allow_unprovable = false;
  //! A thread that meets a site while this change is under way sleeps until
  //! the change has landed (at most 1 ms per trap), then runs the new code,
  //! instead of running the old code from the trap handler: it traps once,
  //! not at every call, and its CPU needs no IPI for the change's syncs.
  //! Applies when no site needs the fix-up round and syncs use membarrier
  //! (those need every thread to answer a signal). Off: threads never block.
  bool trapped_threads_wait = true;
};

//! The counters of the live protocol, each with what it counts: the one list
//! that LiveStats and the process-wide counters behind it are made from.
// clang-format off
#define PUNCH_LIVE_STATS(X)                                                                                           \
  X(commits)                  /* Successful commits. */                                                               \
  X(reverts)                  /* Successful reverts. */                                                               \
  X(rollbacks)                /* Failed commits/reverts that restored memory. */                                      \
  X(traps_redirected)         /* Threads that hit a site in flight and were sent to a copy. */                        \
  X(traps_emulated)           /* Threads that hit a site in flight whose old jmp/call/nop the handler ran. */         \
  X(traps_waited)             /* Threads that hit a site in flight and slept until the change landed. */              \
  X(trap_waits_expired)       /* ... and gave up after 1 ms (a slow coordinator), then ran the old code. */           \
  X(late_traps)               /* Traps at a site already finished: the thread re-ran the new code. */                 \
  X(traps_chained)            /* Traps that were not punch's, passed to the previous handler. */                      \
  X(fixup_rounds)             /* Rendezvous before step 2 (multi-instruction sites only). */                          \
  X(threads_moved)            /* Threads found strictly inside a site and moved to its copy. */                       \
  X(blocked_threads_accepted) /* Unanswering threads proven blocked in a syscall outside the sites. */                \
  X(sleepers_caught)          /* Threads left asleep by a hold that woke during the change: held at a tripwire. */    \
  X(tripwires_taken_away)     /* Tripwires the holder met itself: put back, their sleepers unguarded for the change. */\
  X(reclaim_rounds)           /* Rendezvous that freed out-of-line copies. */                                         \
  X(generations_retired_early) /* Generations without copies reclaimed with no rendezvous (sites remembered). */     \
  X(copies_freed)             /* Out-of-line copy blocks freed. */
// clang-format on

//! Process-wide counters of the live protocol, for tests and monitoring
//! (monotonic): one std::uint64_t per name of PUNCH_LIVE_STATS.
struct LiveStats {
#define PUNCH_LIVE_STATS_FIELD(name) std::uint64_t name = 0;
  PUNCH_LIVE_STATS(PUNCH_LIVE_STATS_FIELD)
#undef PUNCH_LIVE_STATS_FIELD
};

//! A snapshot of the counters.
LiveStats live_stats();

//! Frees the out-of-line copies of finished transactions that no thread can
//! still be running (a rendezvous proves it). Commits do this on their own
//! every few transactions; call it to release memory now. Returns how many
//! copy blocks are still retained (some thread may be inside them).
Result<std::size_t> reclaim_retired_copies(std::chrono::milliseconds timeout = std::chrono::milliseconds(1000));

//! A batch of sites applied and reverted as one.
//!
//! Thread-safe against other transactions: commits and reverts of all
//! transactions in the process are serialized; a site whose bytes changed
//! since validation is refused, not applied. One Transaction object is used
//! by one thread at a time (it caches what it derives from its sites).
class Transaction {
 public:
  explicit Transaction(TransactionOptions options = {});
  ~Transaction();  //!< Does not revert: committed patches stay.
  Transaction(Transaction&&) noexcept;
  Transaction& operator=(Transaction&&) noexcept;

  //! Adds a site. Only cheap checks here (sizes, overlap with sites already added).
  Status add(Site site);

  //! Validates every site against the code as it is now, touching nothing
  //! (it maps nothing either: room for out-of-line copies is only looked for).
  //! After a successful validate(), a commit that finds different bytes reports
  //! kConflict (someone changed them since) rather than kBytesMismatch.
  Status validate() const;

  //! Validates, then applies every site with the live protocol. On any
  //! failure, memory is exactly as it was (or a kInconsistent error says
  //! which sites hold which bytes if even the rollback failed).
  Status commit();

  //! Restores the original bytes of a committed transaction, with the same protocol.
  Status revert();

  bool committed() const noexcept;
  std::span<const Site> sites() const noexcept;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace punch::patcher
