// Thread fix-up: the int3 protocol protects threads that arrive at a site's
// first byte; a thread preempted between two instructions of a replaced run
// would resume in the middle of the new bytes. Each thread checks its own
// saved rip in a signal handler and moves it to the equivalent instruction of
// the copy (which ends by jumping back after the site).
#include "thread_fixup.hpp"

#include <atomic>
#include <string>

#include <punch/runtime/raw_syscall.hpp>
#include <punch/runtime/sync.hpp>
#include <punch/runtime/threads.hpp>

namespace punch::patcher::live {
namespace {

struct FixupRound {
  const Generation* generation = nullptr;
  std::atomic<std::uint64_t> moved{0};
  std::atomic<pid_t> stray_tid{0};  // A thread inside a site but not at one of its instructions.
  std::atomic<std::uintptr_t> stray_rip{0};
};

// Moves a thread whose saved rip lies strictly inside a site of the round's
// generation to the same instruction of the site's copy. Async-signal-safe.
void move_out_of_sites(ucontext_t* context, FixupRound* round) {
  greg_t& rip = context->uc_mcontext.gregs[REG_RIP];
  const FlightSite* site = round->generation->site_strictly_holding(static_cast<std::uintptr_t>(rip));
  if (site && site->fixup_copy) {
    const std::uint32_t offset = static_cast<std::uint32_t>(static_cast<std::uintptr_t>(rip) - site->address);
    const disasm::OffsetMapping* map = round->generation->offsets.data() + site->offsets_begin;
    std::uint32_t i = 0;
    while (i < site->offsets_count && map[i].old_offset != offset) ++i;
    if (i < site->offsets_count) {
      rip = static_cast<greg_t>(site->fixup_copy + map[i].new_offset);
      round->moved.fetch_add(1, std::memory_order_relaxed);
    } else {
      round->stray_rip.store(static_cast<std::uintptr_t>(rip), std::memory_order_relaxed);
      round->stray_tid.store(runtime::raw_gettid(), std::memory_order_relaxed);
    }
  }
}

// Runs on every other thread in its rendezvous handler: async-signal-safe.
// Always serializes: the round stands in for the sync after step 1.
void move_if_inside(ucontext_t* context, void* arg) {
  move_out_of_sites(context, static_cast<FixupRound*>(arg));
  runtime::serialize_this_thread();
}

Status stray_thread(pid_t tid, std::uintptr_t rip) {
  return fail(ErrorCode::kUnprovable, "thread " + std::to_string(tid) + " is at " + at(rip) +
                                          ", inside a site but not at one of its instructions");
}

Status sleeper_inside_site(const Generation& generation, pid_t tid, std::uintptr_t pc) {
  if (const FlightSite* s = generation.site_strictly_holding(pc))
    return fail(ErrorCode::kTimeout, "thread " + std::to_string(tid) + " is blocked in a system call at " + at(pc) +
                                         ", inside the site at " + at(s->address));
  return {};
}

}  // namespace

bool needs_fixup(const Generation& generation) noexcept {
  for (const FlightSite& s : generation.sites)
    if (s.fixup_copy) return true;
  return false;
}

Result<std::size_t> move_threads_out_of_sites(const Generation& generation, std::chrono::milliseconds timeout) {
  FixupRound round;
  round.generation = &generation;
  // Threads asleep in a system call are left asleep (a signal would make
  // their poll or nanosleep fail with EINTR): they resume outside every site,
  // or the round fails. They did not serialize: the caller syncs for them.
  auto rendezvous = runtime::visit_other_threads(move_if_inside, &round, timeout, runtime::Sleepers::kLeaveAsleep);
  if (!rendezvous) return tl::unexpected(std::move(rendezvous).error());
  g_counters.fixup_rounds.fetch_add(1, std::memory_order_relaxed);
  g_counters.threads_moved.fetch_add(round.moved.load(), std::memory_order_relaxed);
  if (pid_t tid = round.stray_tid.load()) return tl::unexpected(stray_thread(tid, round.stray_rip.load()).error());
  for (pid_t tid : rendezvous->unanswered) {
    auto blocked = runtime::blocked_syscall_address(tid);
    if (!blocked)
      return fail(ErrorCode::kTimeout, "thread " + std::to_string(tid) + " did not answer the fix-up signal within " +
                                           std::to_string(timeout.count()) +
                                           " ms and is not provably blocked in a system call (" +
                                           blocked.error().message + ")");
    PUNCH_TRY(sleeper_inside_site(generation, tid, *blocked));
  }
  for (const runtime::SleepingThread& t : rendezvous->sleeping) PUNCH_TRY(sleeper_inside_site(generation, t.tid, t.pc));
  const std::size_t not_visited = rendezvous->unanswered.size() + rendezvous->sleeping.size();
  g_counters.blocked_threads_accepted.fetch_add(not_visited, std::memory_order_relaxed);
  return not_visited;
}

Status move_held_threads_out_of_sites(const Generation& generation, runtime::ThreadHold& hold,
                                      std::chrono::milliseconds timeout) {
  PUNCH_TRY(hold.recheck_sleepers(timeout));
  FixupRound round;
  round.generation = &generation;
  for (const runtime::ThreadHold::Held& h : hold.held()) {
    move_out_of_sites(h.context, &round);
    if (round.stray_tid.load()) return stray_thread(h.tid, round.stray_rip.load());
  }
  for (const runtime::SleepingThread& s : hold.sleeping()) PUNCH_TRY(sleeper_inside_site(generation, s.tid, s.pc));
  g_counters.fixup_rounds.fetch_add(1, std::memory_order_relaxed);
  g_counters.threads_moved.fetch_add(round.moved.load(), std::memory_order_relaxed);
  g_counters.blocked_threads_accepted.fetch_add(hold.sleeping().size(), std::memory_order_relaxed);
  return {};
}

}  // namespace punch::patcher::live
