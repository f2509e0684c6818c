// The live protocol: three writes and three syncs per batch, and a rollback
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
// Forward: trapped, sync, (fix-up), middle, sync, final, sync.
// Backward from step k: middle (k=3), sync, trapped (k>=2), sync, base, sync.
#include "live_protocol.hpp"

#include <algorithm>
#include <cstring>

#include <punch/runtime/code_writer.hpp>
#include <punch/runtime/safe_read.hpp>
#include <punch/runtime/sync.hpp>

#include "flight_table.hpp"
#include "out_of_line.hpp"
#include "thread_fixup.hpp"
#include "trap_handler.hpp"

namespace punch::patcher::live {
namespace {

// Sites of one container further apart than this get their own writes.
constexpr std::size_t kMaxCoalescedGap = 1024;

enum class Image { kBase, kTrapped, kMiddle, kFinal };

struct Run {
  std::uintptr_t start = 0;
  std::vector<std::uint8_t> images[4];
  std::vector<std::size_t> members;  // Indices into the sites.
  bool has_code = false;

  std::uintptr_t end() const noexcept { return start + images[0].size(); }
};

std::vector<Run> make_runs(std::span<const CheckedSite> sites, std::uint8_t trap) {
  std::vector<Run> runs;
  for (std::size_t i = 0; i < sites.size(); ++i) {
    const CheckedSite& s = sites[i];
    bool joins = false;
    if (!runs.empty() && s.container && s.container->stable) {
      const CheckedSite& prev = sites[runs.back().members.back()];
      joins = prev.container == s.container && s.address >= runs.back().end() &&
              s.address - runs.back().end() <= kMaxCoalescedGap;
    }
    if (!joins) {
      runs.emplace_back();
      runs.back().start = s.address;
    }
    Run& run = runs.back();
    if (joins) {  // Bytes between the previous site and this one, unchanged in every image.
      const std::uintptr_t gap_start = run.end();
      auto gap = std::span<const std::uint8_t>(s.container->bytes).subspan(gap_start - s.container->start,
                                                                           s.address - gap_start);
      for (auto& image : run.images) image.insert(image.end(), gap.begin(), gap.end());
    }
    run.images[0].insert(run.images[0].end(), s.from.begin(), s.from.end());
    run.images[3].insert(run.images[3].end(), s.to.begin(), s.to.end());
    if (s.is_code) {
      run.images[1].push_back(trap);
      run.images[1].insert(run.images[1].end(), s.from.begin() + 1, s.from.end());
      run.images[2].push_back(trap);
      run.images[2].insert(run.images[2].end(), s.to.begin() + 1, s.to.end());
      run.has_code = true;
    } else {  // Data is not executed: no trap, the new bytes land in step 2.
      run.images[1].insert(run.images[1].end(), s.from.begin(), s.from.end());
      run.images[2].insert(run.images[2].end(), s.to.begin(), s.to.end());
    }
    run.members.push_back(i);
  }
  return runs;
}

class Protocol {
 public:
  Protocol(std::span<const CheckedSite> sites, const TransactionOptions& options, std::string_view what,
           runtime::CodeWriter& writer)
      : sites_(sites), options_(options), what_(what), writer_(writer),
        runs_(make_runs(sites, trap_byte(options.trap))) {}

  Status run(Generation* generation);

 private:
  // Writes `image` of every run (only runs with code when `code_only`).
  Status write_all(Image image, bool code_only, int attempts = 1) {
    for (const Run& run : runs_) {
      if (code_only && !run.has_code) continue;
      const auto& bytes = run.images[static_cast<int>(image)];
      Status written;
      for (int attempt = 0; attempt < attempts; ++attempt)
        if ((written = writer_.write(run.start, bytes))) break;
      if (!written)
        return fail(written.error().code, "writing [" + at(run.start) + ", " + at(run.end()) + ") (" +
                                              site_name(sites_[run.members.front()].index,
                                                        sites_[run.members.front()].address) +
                                              (run.members.size() > 1
                                                   ? " and " + std::to_string(run.members.size() - 1) + " more"
                                                   : std::string()) +
                                              "): " + written.error().message);
    }
    return {};
  }

  Status sync(int attempts = 1) {
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

  // What each site holds now, for a kInconsistent message; whether any holds a trap.
  std::string describe_sites(bool& any_mixed) const {
    std::string out;
    any_mixed = false;
    for (const CheckedSite& s : sites_) {
      auto now = runtime::safe_read_exact(s.address, s.from.size());
      out += "; " + site_name(s.index, s.address) + " holds ";
      if (!now) {
        out += "unreadable bytes";
        any_mixed = true;
      } else if (*now == s.from) {
        out += "its old bytes";
      } else if (*now == s.to) {
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
  Status abort(int step, const char* stage, Error error, Generation* generation) {
    std::string context = std::string(what_) + " failed in step " + std::to_string(step) + " (" + stage + ")";
    Status undone = roll_back(step);
    if (undone) {
      if (generation) generation->state.store(GenerationState::kDraining, std::memory_order_release);
      g_counters.rollbacks.fetch_add(1, std::memory_order_relaxed);
      return fail(error.code, context + ": " + error.message + "; rolled back, every site holds its old bytes");
    }
    bool any_mixed = false;
    std::string where = describe_sites(any_mixed);
    // A site that may hold a trap byte keeps its generation in flight, so threads reaching it stay safe.
    if (generation && !any_mixed) generation->state.store(GenerationState::kDraining, std::memory_order_release);
    return fail(ErrorCode::kInconsistent, context + ": " + error.message + "; the rollback failed too (" +
                                              undone.error().message + ")" + where);
  }

  std::span<const CheckedSite> sites_;
  const TransactionOptions& options_;
  std::string_view what_;
  runtime::CodeWriter& writer_;
  std::vector<Run> runs_;
};

Status Protocol::run(Generation* generation) {
  if (auto s = write_all(Image::kTrapped, true); !s) return abort(1, "trap bytes", s.error(), generation);
  if (auto s = sync(); !s) return abort(1, "sync after trap bytes", s.error(), generation);
  if (generation && needs_fixup(*generation))
    if (auto s = move_threads_out_of_sites(*generation, options_.thread_timeout); !s)
      return abort(1, "thread fix-up", s.error(), generation);
  if (auto s = write_all(Image::kMiddle, false); !s) return abort(2, "bytes [1,n)", s.error(), generation);
  if (auto s = sync(); !s) return abort(2, "sync after bytes [1,n)", s.error(), generation);
  // Threads may run the new code as soon as one first byte lands, so a failure
  // here is first retried forward; going back is only safe when no thread can
  // be inside new code of several instructions.
  if (auto s = write_all(Image::kFinal, true, 2); !s) {
    const bool new_multi = std::any_of(sites_.begin(), sites_.end(),
                                       [](const CheckedSite& c) { return c.is_code && c.to_instructions > 1; });
    if (!new_multi) return abort(3, "first bytes", s.error(), generation);
    bool any_mixed = false;
    std::string where = describe_sites(any_mixed);
    return fail(ErrorCode::kInconsistent, std::string(what_) + " failed in step 3 (first bytes): " +
                                              s.error().message +
                                              "; not rolled back: threads may be inside new code of several "
                                              "instructions" + where);
  }
  // The last sync only bounds how long a thread may still meet a stale trap
  // byte; such a late trap re-runs the site (see trap_handler.cpp), so the
  // patch is complete even if this sync fails.
  (void)sync();
  if (generation) generation->state.store(GenerationState::kDraining, std::memory_order_release);
  return {};
}

}  // namespace

Status run_protocol(std::span<const CheckedSite> sites, const TransactionOptions& options, std::string_view what) {
  if (sites.empty()) return {};
  auto writer = runtime::CodeWriter::global();
  if (!writer) return tl::unexpected(std::move(writer).error());
  const bool any_code = std::any_of(sites.begin(), sites.end(), [](const CheckedSite& c) { return c.is_code; });
  if (any_code) PUNCH_TRY(ensure_trap_handler(options.trap));

  // Old draining generations are reclaimed every so often (one rendezvous for many commits).
  if (draining_generations() >= kMaxGenerations / 4) (void)reclaim_generations(options.thread_timeout);

  auto generation = build_generation(sites, options.trap);
  if (!generation) return tl::unexpected(std::move(generation).error());
  Generation* published = nullptr;
  if (!(*generation)->sites.empty()) {
    if (!publish(generation->get())) {
      free_copies(**generation);
      return fail(ErrorCode::kConflict, std::string(what) + ": " + std::to_string(kMaxGenerations) +
                                            " generations of sites are still retained (threads inside their "
                                            "copies?); try again later");
    }
    published = generation->release();  // Owned by the table until reclaimed.
  }
  Protocol protocol(sites, options, what, **writer);
  return protocol.run(published);
}

}  // namespace punch::patcher::live
