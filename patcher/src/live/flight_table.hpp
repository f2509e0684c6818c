// The sites in flight, readable from signal handlers without locks.
//
// A Generation is the immutable record of one protocol run (a commit, a
// revert or a rollback): its sites, sorted by address, and the out-of-line
// copies of the code they replace. It is published in a slot before step 1,
// turns "draining" once the final bytes are written (or "stranded" when a
// failed rollback may have left a trap byte), and is removed and freed only by
// reclamation, after a rendezvous proves no thread can still need it.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include <punch/disasm/relocate.hpp>
#include <punch/patcher/transaction.hpp>

namespace punch::patcher::live {

//! How the trap handler runs a site's old code when that is one instruction
//! it can carry out itself (as alternative.c's int3_emulate_* do): no copy to
//! write, and no copy a thread could still be inside when the patch returns.
enum class Emulation : std::uint8_t {
  kNone,  //!< Not emulated: the thread goes to `redirect`.
  kSkip,  //!< A nop: continue after the site.
  kJump,  //!< jmp rel: continue at the target.
  kCall,  //!< call rel: push the site's end, continue at the target.
  kLoad,  //!< mov reg, imm (disasm::immediate_load): set the register, continue after the site.
};

//! One site of a generation.
struct FlightSite {
  std::uintptr_t address = 0;
  std::uint32_t length = 0;
  Emulation emulation = Emulation::kNone;
  std::uintptr_t emulation_target = 0;  //!< kJump and kCall: where to go; kLoad: the register's new value.
  std::uint8_t emulation_register = 0;  //!< kLoad: the x86 register number (disasm::ImmediateLoad::reg).
  //! Where a thread that traps on the site continues while it is in flight,
  //! when the old code is not emulated: a copy of the old code (or, when that
  //! cannot be relocated and the site is one instruction, of the new code),
  //! each ending in a jump back.
  std::uintptr_t redirect = 0;
  //! Copy of the old code for threads found strictly inside a multi-instruction
  //! site, with the offset map old -> copy. 0 when the old code is one instruction.
  std::uintptr_t fixup_copy = 0;
  std::uint32_t offsets_begin = 0;  //!< Into Generation::offsets.
  std::uint32_t offsets_count = 0;

  std::uintptr_t end() const noexcept { return address + length; }
};

//! A block of out-of-line copies, allocated from the code heap.
struct CopyBlock {
  std::uintptr_t address = 0;
  std::size_t size = 0;
};

//! Where a generation's run is. The value is a futex word: threads that may
//! wait for the run (see Generation::waitable) sleep on it while kInFlight.
enum GenerationState : std::uint32_t {
  kInFlight,  //!< The coordinator is changing its sites now.
  kStranded,  //!< In flight for good: a failed rollback may have left a trap byte; nobody finishes it.
  kDraining,  //!< The run is over (done or rolled back): each site holds whole instructions again.
};

//! The record of one protocol run. Immutable once published, except `state`.
struct Generation {
  std::vector<FlightSite> sites;  //!< Sorted by address.
  std::vector<disasm::OffsetMapping> offsets;
  std::vector<CopyBlock> blocks;
  TrapInstruction trap = TrapInstruction::kInt3;
  std::atomic<std::uint32_t> state{kInFlight};  //!< A GenerationState.
  //! A thread that traps at a site while the run is under way may sleep until
  //! it is over (then run the new code) instead of running the old code from
  //! the handler: no site needs a fix-up round and syncs use membarrier, so
  //! the run never waits for a thread that is inside its trap handler.
  bool waitable = false;
  pid_t coordinator = 0;                          //!< The thread running the change: never waits for itself.
  mutable std::atomic<std::uint32_t> waiters{0};  //!< Threads asleep on `state` (the coordinator wakes them only then).
  //! Threads the trap handler sent into its copies (Emulation::kNone). A
  //! generation none entered is reclaimed without a rendezvous.
  mutable std::atomic<std::uint32_t> copies_entered{0};
  //! Some copy can leave other than through the jump back to its site's end
  //! (a branch or call out of the site, an indirect jump or call): a thread
  //! inside it may reach code a caller frees after the run, so the run drains
  //! its copies before returning (see drain_copies).
  bool copies_may_leave = false;
  //! Its slot while published (set by publish; read by unpublish, under the live lock).
  std::size_t slot = 0;

  //! Bytes of its copy blocks.
  std::size_t copy_bytes() const noexcept;
  //! The site starting exactly at `address`, or null. Async-signal-safe.
  const FlightSite* site_at(std::uintptr_t address) const noexcept;
  //! The site with address < rip < end, or null. Async-signal-safe.
  const FlightSite* site_strictly_holding(std::uintptr_t rip) const noexcept;
  //! Whether `rip` lies in one of the copy blocks. Async-signal-safe.
  bool copies_hold(std::uintptr_t rip) const noexcept;
};

//! Ends `generation`'s run in `state` (kDraining or kStranded) and wakes the threads waiting for it.
void end_run(Generation& generation, GenerationState state) noexcept;

//! Maximum generations published at once (in flight, draining or stuck after a failed rollback).
constexpr std::size_t kMaxGenerations = 256;

//! Publishes a generation (before step 1). False when every slot is taken.
bool publish(Generation* generation) noexcept;

//! Removes a generation from its slot and waits until no handler still reads
//! it; after this it may be freed.
void unpublish(Generation* generation) noexcept;

//! Every published generation (call under the live lock).
std::vector<Generation*> published_generations();

//! How many generations are published, and the bytes of their copies (cheap: kept by publish and unpublish).
struct PublishedTotals {
  std::size_t generations = 0;
  std::size_t copy_bytes = 0;
};
PublishedTotals published_totals() noexcept;

//! Sites of generations that were unpublished without a rendezvous. A
//! generation whose out-of-line copies no thread entered (or that has none:
//! every old instruction emulated, as in most one-instruction changes of
//! patch points) leaves nothing a thread can be inside, and its trap bytes
//! are gone; all a thread can still have is a trap
//! taken there whose signal is not yet handled (or a stale trap byte a core
//! still sees). Its handler finds the site here, sees the byte there is no
//! longer the trap, and re-runs it. So such generations are reclaimed at once,
//! and a rendezvous (whose cost grows with the thread count) is needed only
//! when this table is full: it proves no thread is between a trap and its
//! handler, and the table is emptied.
constexpr std::size_t kMaxRetiredSites = std::size_t{1} << 16;

//! Records the first bytes of `generation`'s sites (under the live lock).
//! False, recording nothing, when they do not fit.
bool remember_retired_sites(const Generation& generation) noexcept;

//! Whether `site` is a remembered site of a generation that used `trap`. Async-signal-safe.
bool is_retired_site(std::uintptr_t site, TrapInstruction trap) noexcept;

//! Forgets every remembered site (under the live lock, once a rendezvous
//! proved that no thread is between a trap and its handler).
void forget_retired_sites() noexcept;

//! Holds off unpublish() while a signal handler reads the slots.
class ReadGuard {
 public:
  ReadGuard() noexcept;
  ~ReadGuard();
  ReadGuard(const ReadGuard&) = delete;
  ReadGuard& operator=(const ReadGuard&) = delete;
  //! The generation in slot `i` (may be null).
  const Generation* slot(std::size_t i) const noexcept;
};

//! Process-wide counters behind LiveStats, one atomic per name of
//! PUNCH_LIVE_STATS; constant-initialized, so signal handlers may touch them.
struct LiveCounters {
#define PUNCH_LIVE_COUNTER(name) std::atomic<std::uint64_t> name{0};
  PUNCH_LIVE_STATS(PUNCH_LIVE_COUNTER)
#undef PUNCH_LIVE_COUNTER

  //! Every counter as it is now (each read on its own).
  LiveStats snapshot() const noexcept;
};
extern LiveCounters g_counters;

}  // namespace punch::patcher::live
