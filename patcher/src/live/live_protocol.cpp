// The live protocol: three writes and two syncs per batch, and a rollback
// that walks the same steps backwards from wherever a failure left us.
//
// Each "run" is one contiguous range written with one pwrite per step: a site
// alone, or neighbouring sites of one stable container with the bytes between
// them rewritten unchanged (they were read under the live lock, and only
// transactions, which that lock serializes, change them). Every step writes
// the run's whole range from one of four images, so a write that failed half
// way never leaves bytes a later step does not cover:
//   base    = every site's old bytes;
//   trapped = base with the trap byte over each code site's first byte;
//   middle  = trapped with each code site's new bytes [1,n), data sites' new bytes;
//   final   = every site's new bytes.
// Forward: trapped, sync, (fix-up), middle, sync, final.
// Backward from step k: middle (k=3), sync, trapped (k>=2), sync, base, sync.
// When every other thread is held still and none is left asleep, a sync is
// this thread's serializing instruction alone (held threads serialize when
// released). The trap bytes stay: this thread may meet its own sites.
//
// The kernel's text_poke_bp syncs once more after the final bytes, so that no
// CPU can still meet a trap byte once its handler data is gone. Here that
// data, the generation, stays published after the run until reclamation has
// synced every thread and seen each one outside its trap handler (see
// copy_reclamation.cpp); until then a core that still sees a stale trap byte
// traps, and the handler re-runs the site, which holds the new code in full.
// No core can see the old code any more: the first sync took the old first
// bytes away, the second put every new byte [1,n) in place. So the run ends
// with the write of the final bytes, and a change costs two syncs, not three.
#include "live_protocol.hpp"

#include <signal.h>
#include <sys/syscall.h>

#include <algorithm>
#include <optional>
#include <cstring>

#include <punch/runtime/code_writer.hpp>
#include <punch/runtime/raw_syscall.hpp>
#include <punch/runtime/safe_read.hpp>
#include <punch/runtime/sync.hpp>
#include <punch/runtime/threads.hpp>

#include "flight_table.hpp"
#include "copy_reclamation.hpp"
#include "out_of_line.hpp"
#include "site_messages.hpp"
#include "thread_fixup.hpp"
#include "trap_handler.hpp"

namespace punch::patcher::live {
namespace {

// Sites of one container further apart than this get their own writes.
constexpr std::size_t kMaxCoalescedGap = 1024;

enum class Image { kBase, kTrapped, kMiddle, kFinal };

// A contiguous range written with one write per step. Its bytes for each
// image live in the protocol's four image buffers, at [begin, begin+size).
struct Run {
  std::uintptr_t start = 0;
  std::size_t begin = 0;
  std::size_t size = 0;
  std::size_t first_site = 0;  // Its sites are [first_site, first_site+sites) of the batch (by address).
  std::size_t sites = 0;
  bool has_code = false;

  std::uintptr_t end() const noexcept { return start + size; }
};

struct Runs {
  std::vector<Run> runs;
  std::vector<std::uint8_t> images[4];
};

// The base and final images are the sites' old and new bytes (and the bytes
// between neighbours of a run); trapped and middle are copies of them with
// the trap byte over each code site's first byte.
Runs make_runs(const CheckedBatch& batch, std::uint8_t trap) {
  Runs out;
  std::vector<std::uint8_t>& base = out.images[static_cast<int>(Image::kBase)];
  std::vector<std::uint8_t>& final_bytes = out.images[static_cast<int>(Image::kFinal)];
  std::size_t bytes = 0;
  for (const CheckedSite& s : batch.sites) bytes += s.from.size();
  base.reserve(bytes);
  final_bytes.reserve(bytes);
  out.runs.reserve(batch.sites.size());  // At most one per site.
  std::vector<std::size_t> first_bytes;  // Where each code site starts in the images.
  first_bytes.reserve(batch.sites.size());
  auto append = [](std::vector<std::uint8_t>& image, std::span<const std::uint8_t> b) {
    image.insert(image.end(), b.begin(), b.end());
  };
  const std::span<const CheckedSite> sites = batch.sites;
  for (std::size_t i = 0; i < sites.size(); ++i) {
    const CheckedSite& s = sites[i];
    bool joins = false;
    if (!out.runs.empty() && s.container != kNoContainer && batch.containers[s.container].stable) {
      const Run& run = out.runs.back();
      joins =
          sites[i - 1].container == s.container && s.address >= run.end() && s.address - run.end() <= kMaxCoalescedGap;
    }
    if (!joins) out.runs.push_back(Run{s.address, base.size(), 0, i, 0, false});
    Run& run = out.runs.back();
    if (joins) {  // Bytes between the previous site and this one, unchanged in every image.
      const Container& box = batch.containers[s.container];
      const auto gap = batch.bytes_of(box).subspan(run.end() - box.start, s.address - run.end());
      append(base, gap);
      append(final_bytes, gap);
    }
    if (s.is_code) {  // Data is not executed: no trap, the new bytes land in step 2.
      first_bytes.push_back(base.size());
      run.has_code = true;
    }
    append(base, s.from);
    append(final_bytes, s.to);
    run.size = base.size() - run.begin;
    ++run.sites;
  }
  std::vector<std::uint8_t>& trapped = out.images[static_cast<int>(Image::kTrapped)] = base;
  std::vector<std::uint8_t>& middle = out.images[static_cast<int>(Image::kMiddle)] = final_bytes;
  for (std::size_t offset : first_bytes) trapped[offset] = middle[offset] = trap;
  return out;
}

class Protocol {
 public:
  Protocol(const CheckedBatch& batch, const TransactionOptions& options, std::string_view what,
           runtime::CodeWriter& writer)
      : sites_(batch.sites),
        options_(options),
        what_(what),
        writer_(writer),
        runs_(make_runs(batch, trap_byte(options.trap))) {
    pieces_.reserve(runs_.runs.size());
  }

  // The other threads, held still for the run (without: they run on, see run_protocol).
  void hold(runtime::ThreadHold* hold) noexcept { hold_ = hold; }

  Status run(Generation* generation);

 private:
  // Threads sent into out-of-line copies so far (traps redirected, threads moved).
  static std::uint64_t copy_entries() {
    return g_counters.traps_redirected.load(std::memory_order_relaxed) +
           g_counters.threads_moved.load(std::memory_order_relaxed);
  }

  // The run is over: later traps at its sites re-run them (draining), and if
  // this run sent threads into copies that can leave for code elsewhere, they
  // have left before we return.
  void retire(Generation* generation) {
    if (hold_) hold_->release();  // Before any drain, which needs the threads to answer.
    if (!generation) return;
    end_run(*generation, kDraining);  // Before any drain: a thread asleep in its trap handler cannot answer.
    if (generation->copies_may_leave && copy_entries() != entries_before_)
      drain_copies(*generation, options_.thread_timeout);
  }

  // Writes `image` of every run (only runs with code when `code_only`), all
  // in one CodeWriter::write_each batch; a run whose write fails is tried
  // `attempts` times in all.
  //
  // Each pass goes the other way round from the pass before it, in any run of
  // the protocol (all run under the live lock): the kernel's data for the
  // pages written last is still in this CPU's caches, and a batch over a
  // thousand pages writes a few percent faster that way than always upwards.
  Status write_all(Image image, bool code_only, int attempts = 1) {
    static bool g_downwards = false;
    g_downwards = !g_downwards;
    const std::span<const std::uint8_t> bytes = runs_.images[static_cast<int>(image)];
    pieces_.clear();
    for (std::size_t k = 0; k < runs_.runs.size(); ++k) {
      const Run& run = runs_.runs[g_downwards ? runs_.runs.size() - 1 - k : k];
      if (code_only && !run.has_code) continue;
      pieces_.push_back({run.start, bytes.subspan(run.begin, run.size)});
    }
    for (std::size_t done = 0, tries = 0; done < pieces_.size();) {
      std::size_t written = 0;
      const Status status = writer_.write_each(std::span(pieces_).subspan(done), written);
      if (status) break;
      tries = written > 0 ? 1 : tries + 1;  // Failures in a row of the same run.
      done += written;
      if (tries < static_cast<std::size_t>(attempts)) continue;
      // The failed piece's run (runs are by address; a piece starts where its run does).
      const Run& run = *std::lower_bound(runs_.runs.begin(), runs_.runs.end(), pieces_[done].address,
                                         [](const Run& r, std::uintptr_t a) { return r.start < a; });
      return fail(status.error().with_context(
          "writing [" + at(run.start) + ", " + at(run.end()) + ") (" +
          site_name(sites_[run.first_site].index, sites_[run.first_site].address) +
          (run.sites > 1 ? " and " + std::to_string(run.sites - 1) + " more" : std::string()) + ")"));
    }
    return {};
  }

  // With every other thread held and none left asleep, no other thread runs
  // until it is released, and each serializes then: only this thread must
  // serialize here, and no CPU is interrupted.
  Status sync(int attempts = 1) {
    if (hold_ && hold_->sleeping().empty()) {
      runtime::serialize_this_thread();
      return {};
    }
    Status synced;
    for (int attempt = 0; attempt < attempts; ++attempt)
      if ((synced = runtime::sync_all_threads())) break;
    return synced;
  }

  // Walks back to the old bytes from a failure in step `step` (1..3). Rollback
  // writes and syncs are retried once: a single transient failure must not
  // leave the process half-patched.
  Status roll_back(int step) {
    if (step >= 3) {
      PUNCH_TRY(write_all(Image::kMiddle, false, 2));
      PUNCH_TRY(sync(2));
    }
    if (step >= 2) {
      PUNCH_TRY(write_all(Image::kTrapped, false, 2));
      PUNCH_TRY(sync(2));
    }
    PUNCH_TRY(write_all(Image::kBase, false, 2));
    PUNCH_TRY(sync(2));
    return {};
  }

  // What each site holds now, for a kInconsistent message; whether any holds
  // a trap (or cannot be read), and whether every site holds its old bytes.
  std::string describe_sites(bool& any_mixed, bool& all_old) const {
    std::string out;
    any_mixed = false;
    all_old = true;
    for (const CheckedSite& s : sites_) {
      auto now = runtime::safe_read_exact(s.address, s.from.size());
      out += "; " + site_name(s.index, s.address) + " holds ";
      const bool old = now && std::equal(now->begin(), now->end(), s.from.begin(), s.from.end());
      all_old = all_old && old;
      if (!now) {
        out += "unreadable bytes";
        any_mixed = true;
      } else if (old) {
        out += "its old bytes";
      } else if (std::equal(now->begin(), now->end(), s.to.begin(), s.to.end())) {
        out += "its new bytes";
      } else {
        any_mixed = true;
        out += "a mix:";
        for (std::uint8_t b : *now) {
          char hex[4];
          std::snprintf(hex, sizeof hex, " %02x", b);
          out += hex;
        }
      }
    }
    return out;
  }

  // Rolls back after `error` in `step`; the generation is released unless a site may still hold a trap byte.
  Status fail_at(int step, const char* stage, Error error, Generation* generation) {
    std::string context = std::string(what_) + " failed in step " + std::to_string(step) + " (" + stage + ")";
    Status undone = roll_back(step);
    bool any_mixed = false, all_old = false;
    std::string where;
    // A failed rollback may still have found every site as it was (the
    // failing write never changed a byte): that is a clean failure, not an
    // inconsistent process.
    if (!undone) where = describe_sites(any_mixed, all_old);
    if (undone || all_old) {
      retire(generation);
      g_counters.rollbacks.fetch_add(1, std::memory_order_relaxed);
      Error rolled_back = error.with_context(context);
      rolled_back.message += "; rolled back, every site holds its old bytes";
      return fail(std::move(rolled_back));
    }
    // A site that may hold a trap byte keeps its generation in flight, so threads reaching it stay safe.
    if (!any_mixed) retire(generation);
    return fail(
        Error{ErrorCode::kInconsistent,
              context + ": " + error.message + "; the rollback failed too (" + undone.error().message + ")" + where,
              error.address});
  }

  std::span<const CheckedSite> sites_;
  const TransactionOptions& options_;
  std::string_view what_;
  runtime::CodeWriter& writer_;
  runtime::ThreadHold* hold_ = nullptr;
  Runs runs_;
  std::vector<runtime::CodeWriter::Piece> pieces_;  // What write_all writes, one piece per run, in its order.
  const std::uint64_t entries_before_ = copy_entries();
};

Status Protocol::run(Generation* generation) {
  if (auto s = write_all(Image::kTrapped, true); !s) return fail_at(1, "trap bytes", s.error(), generation);
  if (hold_ && generation && needs_fixup(*generation)) {
    // Every other thread is held still or asleep: each held thread's saved
    // rip is moved out of the sites where needed (it serializes when
    // released); sleepers are looked at again, now that the trap bytes stand.
    // The sync is for a sleeper that woke meanwhile: it is cheap when no
    // other thread of the process is on a CPU.
    if (auto s = move_held_threads_out_of_sites(*generation, *hold_, options_.thread_timeout); !s)
      return fail_at(1, "thread fix-up", s.error(), generation);
    if (auto s = sync(); !s) return fail_at(1, "sync after trap bytes", s.error(), generation);
  } else if (generation && needs_fixup(*generation)) {
    // The fix-up round IS the sync of step 1 (compare alternative.c, where
    // the IPIs text_poke_bp sends to every CPU are its sync): every visited
    // thread executes a serializing instruction in its handler, after the
    // trap bytes were written and before it runs another instruction of its
    // own, and this thread serializes itself. That is the guarantee of the
    // sync layer's signal method, which stands in for membarrier SYNC_CORE.
    // A thread that did not answer was accepted only as blocked in the kernel
    // outside every site; it did not serialize, so then (rarely) the usual
    // sync runs as well.
    auto unanswered = move_threads_out_of_sites(*generation, options_.thread_timeout);
    if (!unanswered) return fail_at(1, "thread fix-up", unanswered.error(), generation);
    runtime::serialize_this_thread();
    if (*unanswered > 0)
      if (auto s = sync(); !s) return fail_at(1, "sync after trap bytes", s.error(), generation);
  } else if (auto s = sync(); !s) {
    return fail_at(1, "sync after trap bytes", s.error(), generation);
  }
  if (auto s = write_all(Image::kMiddle, false); !s) return fail_at(2, "bytes [1,n)", s.error(), generation);
  if (auto s = sync(); !s) return fail_at(2, "sync after bytes [1,n)", s.error(), generation);
  // Threads may run the new code as soon as one first byte lands, so a failure
  // here is first retried forward; going back is only safe when no thread can
  // be inside new code of several instructions.
  if (auto s = write_all(Image::kFinal, true, 2); !s) {
    const bool new_multi = std::any_of(sites_.begin(), sites_.end(),
                                       [](const CheckedSite& c) { return c.is_code && c.to_instructions > 1; });
    if (!new_multi) return fail_at(3, "first bytes", s.error(), generation);
    bool any_mixed = false, all_old = false;
    std::string where = describe_sites(any_mixed, all_old);
    return fail(ErrorCode::kInconsistent, std::string(what_) + " failed in step 3 (first bytes): " + s.error().message +
                                              "; not rolled back: threads may be inside new code of several "
                                              "instructions" +
                                              where);
  }
  // No third sync: a thread that still meets a stale trap byte re-runs the
  // site (see the top of this file and trap_handler.cpp).
  retire(generation);
  return {};
}

// Unblocks the trap signal of the calling thread for the run, and restores
// its mask afterwards: the coordinator may meet its own sites (a hooked
// pwrite, say), and a trap it had blocked would kill the process.
class TrapSignalUnblocked {
 public:
  explicit TrapSignalUnblocked(TrapInstruction trap) {
    sigset_t unblock;
    sigemptyset(&unblock);
    sigaddset(&unblock, trap == TrapInstruction::kHlt ? SIGSEGV : SIGTRAP);
    runtime::raw_syscall(SYS_rt_sigprocmask, SIG_UNBLOCK, reinterpret_cast<long>(&unblock),
                         reinterpret_cast<long>(&saved_), sizeof(std::uint64_t));
  }
  ~TrapSignalUnblocked() {
    runtime::raw_syscall(SYS_rt_sigprocmask, SIG_SETMASK, reinterpret_cast<long>(&saved_), 0, sizeof(std::uint64_t));
  }
  TrapSignalUnblocked(const TrapSignalUnblocked&) = delete;
  TrapSignalUnblocked& operator=(const TrapSignalUnblocked&) = delete;

 private:
  sigset_t saved_;
};

}  // namespace

Status run_protocol(const CheckedBatch& batch, const TransactionOptions& options, std::string_view what) {
  const std::span<const CheckedSite> sites = batch.sites;
  if (sites.empty()) return {};
  auto writer = runtime::CodeWriter::global();
  if (!writer) return tl::unexpected(std::move(writer).error());
  const bool any_code = std::any_of(sites.begin(), sites.end(), [](const CheckedSite& c) { return c.is_code; });
  if (any_code) PUNCH_TRY(ensure_trap_handler(options.trap));
  const TrapSignalUnblocked coordinator_can_trap(options.trap);

  // Old draining generations are reclaimed every so often (one rendezvous for many commits).
  if (reclaim_due()) (void)reclaim_generations(options.thread_timeout);

  // Everything that takes a lock is done before the other threads are held:
  // a thread may be paused holding one of punch's locks (a JIT thread inside
  // CodeHeap::allocate, or inside a write), and a change that then waited
  // for that lock would wait for ever. So the out-of-line copies are
  // allocated and written first (the sites' bytes cannot change meanwhile:
  // only transactions change them, under the live lock), and the writer is
  // taken for this thread alone.
  auto generation = build_generation(batch, options.trap);
  if (!generation) return tl::unexpected(std::move(generation).error());
  (*generation)->coordinator = runtime::raw_gettid();
  (*generation)->waitable = options.trapped_threads_wait && !needs_fixup(**generation) &&
                            runtime::sync_method() == runtime::SyncMethod::kMembarrier;
  Protocol protocol(batch, options, what, **writer);
  std::optional<runtime::CodeWriter::Exclusive> only_this_thread_writes;
  only_this_thread_writes.emplace((*writer)->exclusive());
  std::optional<runtime::ThreadHold> hold;
  // Frees the copies when nothing was changed: after letting the threads and
  // the writer go (freeing takes the heap's lock, which ranks before the writer's).
  const auto free_unused_copies = [&] {
    hold.reset();
    only_this_thread_writes.reset();
    free_copies(**generation);
  };

  // Hold the other threads still for the run, before any byte changes: a
  // thread that has the trap signal blocked (for its whole life, as xz's
  // workers; on its way out, as glibc's exiting threads; around fork) would
  // be killed by the kernel if it met a trap byte, and a vfork child
  // (posix_spawn) runs in this memory with default handlers. Held threads
  // meet no trap byte at all. Only with membarrier: the signal method of
  // sync needs every thread to answer, which a held thread cannot.
  //
  // Threads asleep in poll, nanosleep and the like are left asleep (a signal
  // would make their call fail with EINTR), and the hold puts a tripwire over
  // the instruction each resumes at: one that wakes during the change is held
  // before it runs anything, so it cannot start a vfork child either.
  if (any_code && options.hold_threads && runtime::sync_method() == runtime::SyncMethod::kMembarrier) {
    std::vector<runtime::CodeRange> changing;  // Built before the hold: no allocation while threads are held.
    changing.reserve(sites.size());
    for (const CheckedSite& s : sites) changing.push_back({s.address, s.address + s.from.size()});
    auto held = runtime::ThreadHold::hold_other_threads(options.thread_timeout);
    if (!held) {
      free_unused_copies();
      return fail(std::move(held).error().with_context(std::string(what) +
                                                       ": nothing changed, the other threads could not be held still"));
    }
    hold.emplace(std::move(*held));
    if (auto guarded = hold->guard_sleepers(**writer, trap_byte(options.trap), changing, options.thread_timeout);
        !guarded) {
      free_unused_copies();  // Releases the threads (and takes the tripwires away) first.
      return fail(std::move(guarded).error().with_context(
          std::string(what) + ": nothing changed, a sleeper woke and could not be held still"));
    }
    protocol.hold(&*hold);
  }

  Generation* published = nullptr;
  if (!(*generation)->sites.empty()) {
    if (!publish(generation->get())) {
      free_unused_copies();
      return fail(ErrorCode::kExhausted, std::string(what) + ": " + std::to_string(kMaxGenerations) +
                                             " generations of sites are still retained (threads inside their "
                                             "copies?); try again later");
    }
    published = generation->release();  // Owned by the table until reclaimed.
  }
  Status done = protocol.run(published);
  // A run that failed with a trap byte possibly left keeps its generation in
  // flight, but no longer under way: nobody waits for it any more.
  if (published && published->state.load(std::memory_order_relaxed) == kInFlight) end_run(*published, kStranded);
  return done;
}

}  // namespace punch::patcher::live
