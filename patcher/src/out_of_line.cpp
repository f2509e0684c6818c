// Out-of-line copies and their reclamation.
//
// A copy runs the replaced instructions at another address, then jumps back to
// the end of the site. A `call` as the last instruction (direct or indirect)
// is emulated: push the ORIGINAL return address (the site's end) and jump to
// the callee, so no return address ever points into a copy. A thread's rip is
// then the only way it can be inside a copy, which is what the reclamation
// rendezvous checks. RIP-relative operands that read the site's own bytes
// read the copy's (the site's code works as a unit at the copy's address).
#include "out_of_line.hpp"

#include <algorithm>
#include <cstring>
#include <thread>

#include <punch/disasm/instruction.hpp>
#include <punch/disasm/relocate.hpp>
#include <punch/runtime/code_heap.hpp>
#include <punch/runtime/sync.hpp>
#include <punch/runtime/threads.hpp>

namespace punch::patcher::live {
namespace {

constexpr std::size_t kCopyAlign = 16;

// A copy being written into its slot of the block image.
struct Slot {
  std::uintptr_t address = 0;      // Where the slot lives.
  std::span<std::uint8_t> bytes;   // Its part of the image.
  std::size_t used = 0;
  bool overflow = false;           // A copy outgrew its bound (never expected): refused, not written.

  void append(std::span<const std::uint8_t> b) {
    if (b.size() > bytes.size() - used) {
      overflow = true;
      return;
    }
    std::memcpy(bytes.data() + used, b.data(), b.size());
    used += b.size();
  }
  void append_jump(std::uintptr_t to) {
    auto near = disasm::jmp_rel32_bytes(address + used, to);
    if (near) append(*near);
    else append(disasm::encode_jmp_absolute(to));
  }
};

// Writes a copy of [address, address+bytes.size()) into `slot`: the
// instructions relocated, then the way back. `insns` are the instructions when
// known (the old code; empty for new code). `plain`: every instruction runs
// anywhere, so the copy is the bytes themselves. Offsets of each instruction
// go to `offsets` when not null.
Status write_copy(std::uintptr_t address, std::span<const std::uint8_t> bytes,
                  std::span<const disasm::Instruction> insns, bool plain, Slot& slot,
                  std::vector<disasm::OffsetMapping>* offsets) {
  const std::uintptr_t back = address + bytes.size();
  if (plain) {  // No relative operand, no call: the same bytes behave the same anywhere.
    slot.append(bytes);
    if (offsets)
      for (const disasm::Instruction& insn : insns) {
        const auto offset = static_cast<std::uint32_t>(insn.address - address);
        offsets->push_back({offset, offset});
      }
    slot.append_jump(back);
    if (slot.overflow) return fail(ErrorCode::kCannotRelocate, address, "the copy is larger than its size bound");
    return {};
  }
  std::vector<disasm::Instruction> decoded;
  if (insns.empty()) {
    auto all = disasm::decode_all(disasm::CodeSpan{address, bytes});
    if (!all) return tl::unexpected(std::move(all).error());
    decoded = std::move(*all);
    insns = decoded;
  }
  // A final call pushes the site's end and jumps: the callee returns past the site, never into the copy.
  auto moved = disasm::relocate(disasm::CodeSpan{address, bytes}, slot.address,
                                disasm::RelocateOptions{.final_call_as_jump = true});
  if (!moved) return tl::unexpected(std::move(moved).error());
  slot.append(moved->bytes);
  if (offsets) offsets->insert(offsets->end(), moved->offsets.begin(), moved->offsets.end());
  if (!disasm::calls_out(insns.back())) slot.append_jump(back);
  if (slot.overflow)
    return fail(ErrorCode::kCannotRelocate, address, "the relocated copy is larger than its size bound");
  return {};
}

// Whether a thread can be strictly inside the run: not when its first instruction
// never falls through (a jump out of it, a return) — the rest is then unreachable,
// since validation refused branches from outside into the run.
bool interior_reachable(std::uintptr_t address, std::size_t size, std::span<const disasm::Instruction> insns) {
  if (insns.size() < 2) return false;
  const disasm::Instruction& first = insns.front();
  if (first.flow == disasm::Flow::kReturn) return false;
  if (first.flow == disasm::Flow::kJump) return first.branch_target > address && first.branch_target < address + size;
  return true;
}

// How the trap handler can run a site's old code (`insns`, from `bytes`)
// without a copy: one direct jmp or call, one nop (an int3 is a trap, never
// emulated), or one load of a constant into a register (a JIT's inline cache
// or constant slot). A jmp out of the site followed by more bytes counts as
// one: nothing can reach those bytes (a hook's entry jump and the int3
// padding after it). Sets `f`'s emulation, and its target and register.
void set_emulation(FlightSite& f, std::span<const std::uint8_t> bytes, std::span<const disasm::Instruction> insns) {
  f.emulation = Emulation::kNone;
  if (insns.empty() || (insns.size() > 1 && interior_reachable(f.address, bytes.size(), insns))) return;
  const disasm::Instruction& insn = insns.front();
  if (insn.flow == disasm::Flow::kJump && insn.has_branch_target) {
    f.emulation = Emulation::kJump;
    f.emulation_target = insn.branch_target;
  } else if (insns.size() > 1) {
    return;
  } else if (insn.flow == disasm::Flow::kCall && insn.has_branch_target) {
    f.emulation = Emulation::kCall;
    f.emulation_target = insn.branch_target;
  } else if (insn.flow == disasm::Flow::kNone && insn.is_padding) {
    f.emulation = Emulation::kSkip;
  } else if (const auto load = disasm::immediate_load(bytes)) {
    f.emulation = Emulation::kLoad;
    f.emulation_target = load->value;
    f.emulation_register = load->reg;
  }
}

// Whether code copied from [address, address+size) can leave other than by
// falling through its end: a direct branch or call elsewhere, or an indirect one.
// A `ret` goes back to a caller, which a patch never frees.
bool may_leave(std::uintptr_t address, std::size_t size, std::span<const disasm::Instruction> insns) {
  return std::any_of(insns.begin(), insns.end(), [&](const disasm::Instruction& insn) {
    if (insn.flow == disasm::Flow::kIndirectJump || insn.flow == disasm::Flow::kIndirectCall) return true;
    return insn.has_branch_target && (insn.branch_target < address || insn.branch_target > address + size);
  });
}

// An upper bound on a copy's relocated instructions (the tail comes on top).
Result<std::size_t> copy_bound(std::uintptr_t address, std::span<const std::uint8_t> bytes, bool plain) {
  if (plain) return bytes.size();
  return disasm::relocated_size_bound(disasm::CodeSpan{address, bytes});
}

// Where a copy of site `s` may lie: within rel32 reach of the site and of
// every RIP-relative operand its old code reads (relocation has no absolute
// form for data).
runtime::AddressWindow reach_of(const CheckedBatch& batch, const CheckedSite& s) {
  runtime::AddressWindow w = runtime::AddressWindow::rel32_reach(s.address).intersect(runtime::AddressWindow::rel32_reach(s.end()));
  for (const disasm::Instruction& insn : batch.old_instructions(s))
    if (disasm::reads_data_outside(insn, s.address, s.end()))
      w = w.intersect(runtime::AddressWindow::rel32_reach(insn.memory_target));
  return w;
}

}  // namespace

Result<std::unique_ptr<Generation>> build_generation(const CheckedBatch& batch, TrapInstruction trap) {
  auto generation = std::make_unique<Generation>();
  generation->trap = trap;
  const std::span<const CheckedSite> sites = batch.sites;

  // Slot sizes: room for the old code, or (one old instruction that may not
  // move) for the new code, plus the way back. One bound per site; none for
  // an emulated site (one instruction: no thread can be inside it either).
  std::vector<std::size_t> slot_offset(sites.size() + 1, 0);
  std::vector<FlightSite> flights(sites.size());  // Each code site's record, emulation decided here.
  std::size_t total = 0;
  for (std::size_t i = 0; i < sites.size(); ++i) {
    slot_offset[i] = total;
    const CheckedSite& s = sites[i];
    if (!s.is_code) continue;
    flights[i].address = s.address;
    flights[i].length = static_cast<std::uint32_t>(s.from.size());
    set_emulation(flights[i], s.from, batch.old_instructions(s));
    if (flights[i].emulation != Emulation::kNone) continue;
    auto need = copy_bound(s.address, s.from, s.from_plain);
    if (!s.from_plain && s.from_instructions == 1) {
      auto need_new = copy_bound(s.address, s.to, s.to_plain);
      if (need_new && (!need || *need_new > *need)) need = need_new;
    }
    total += ((need ? *need : 0) + kCopyTailBound + kCopyAlign - 1) / kCopyAlign * kCopyAlign;
  }
  slot_offset[sites.size()] = total;
  const auto slot_size = [&](std::size_t i) { return slot_offset[i + 1] - slot_offset[i]; };
  generation->sites.reserve(sites.size());

  // Where the copies go: one block within reach of every site when one window
  // holds them all (one allocation, one write, short jumps back). Else each
  // copy that reads data gets a block within its own reach (relocation has no
  // absolute form for data; sites whose data lie far apart in opposite
  // directions share no window), and the other copies share one block
  // anywhere (they jump back with absolute jumps where rel32 cannot reach).
  // Each block's bytes are a slice of `image`.
  std::vector<std::uintptr_t> slot_address(sites.size(), 0);
  std::vector<std::size_t> block_offset;  // Per block: where its bytes start in `image`.
  std::vector<std::uint8_t> image(total, 0xCC);
  auto heap = runtime::CodeHeap::global();
  if (total > 0 && !heap) return tl::unexpected(std::move(heap).error());
  const auto reads_data = [&](const CheckedSite& s) {
    const auto insns = batch.old_instructions(s);
    return std::any_of(insns.begin(), insns.end(),
                       [&](const disasm::Instruction& i) { return disasm::reads_data_outside(i, s.address, s.end()); });
  };
  const auto take = [&](std::uintptr_t address, std::size_t offset, std::size_t size) {
    generation->blocks.push_back({address, size});
    block_offset.push_back(offset);
  };
  if (total > 0) {
    runtime::AddressWindow all;
    for (std::size_t i = 0; i < sites.size(); ++i)
      if (slot_size(i) > 0) all = all.intersect(reach_of(batch, sites[i]));
    if (auto one = all.empty() ? Result<std::uintptr_t>(fail(ErrorCode::kOutOfRange, "no common window"))
                               : (*heap)->allocate(total, kCopyAlign, all)) {
      take(*one, 0, total);
      for (std::size_t i = 0; i < sites.size(); ++i) slot_address[i] = *one + slot_offset[i];
    } else {
      // The shared block holds the copies that read no data, at their offsets
      // in `image` (a data-reading copy between them is unused bytes there).
      std::size_t shared = 0;
      for (std::size_t i = 0; i < sites.size(); ++i)
        if (slot_size(i) > 0 && !reads_data(sites[i])) shared = slot_offset[i + 1];
      if (shared > 0) {
        auto block = (*heap)->allocate(shared, kCopyAlign);
        if (!block) return tl::unexpected(std::move(block).error());
        take(*block, 0, shared);
        for (std::size_t i = 0; i < sites.size(); ++i)
          if (slot_size(i) > 0 && !reads_data(sites[i])) slot_address[i] = *block + slot_offset[i];
      }
      for (std::size_t i = 0; i < sites.size(); ++i) {
        if (slot_size(i) == 0 || !reads_data(sites[i])) continue;
        auto own = (*heap)->allocate(slot_size(i), kCopyAlign, reach_of(batch, sites[i]));
        if (!own) own = (*heap)->allocate(slot_size(i), kCopyAlign);  // Far away; relocation says if that is not enough.
        if (!own) {
          free_copies(*generation);
          return tl::unexpected(std::move(own).error());
        }
        take(*own, slot_offset[i], slot_size(i));
        slot_address[i] = *own;
      }
    }
  }

  for (std::size_t i = 0; i < sites.size(); ++i) {
    const CheckedSite& s = sites[i];
    if (!s.is_code) continue;
    const auto insns = batch.old_instructions(s);
    FlightSite f = flights[i];
    if (f.emulation != Emulation::kNone) {  // No copy: the handler carries the old instruction out.
      generation->sites.push_back(f);
      continue;
    }
    Slot slot{slot_address[i], std::span(image).subspan(slot_offset[i], slot_size(i))};
    f.redirect = slot.address;
    const bool fixup = interior_reachable(s.address, s.from.size(), insns);
    const std::size_t offsets_before = generation->offsets.size();
    auto old_copy = write_copy(s.address, s.from, insns, s.from_plain, slot, fixup ? &generation->offsets : nullptr);
    if (old_copy) {
      generation->copies_may_leave |= may_leave(s.address, s.from.size(), insns);
      if (fixup) {
        f.fixup_copy = slot.address;
        f.offsets_begin = static_cast<std::uint32_t>(offsets_before);
        f.offsets_count = static_cast<std::uint32_t>(generation->offsets.size() - offsets_before);
      }
    } else if (s.from_instructions == 1) {
      // One old instruction that cannot move (e.g. syscall): trapping threads run the new code in full.
      slot.used = 0;
      slot.overflow = false;
      generation->offsets.resize(offsets_before);
      std::fill(slot.bytes.begin(), slot.bytes.end(), 0xCC);
      if (auto new_copy = write_copy(s.address, s.to, {}, s.to_plain, slot, nullptr); !new_copy) {
        free_copies(*generation);
        return fail(ErrorCode::kCannotRelocate, site_name(s.index, s.address) +
                                                    ": neither the old nor the new code can run out of line: " +
                                                    old_copy.error().message + "; " + new_copy.error().message);
      }
      auto new_insns = disasm::decode_all(disasm::CodeSpan{s.address, s.to});
      generation->copies_may_leave |= !new_insns || may_leave(s.address, s.to.size(), *new_insns);
    } else {
      free_copies(*generation);
      return fail(ErrorCode::kCannotRelocate, site_name(s.index, s.address) +
                                                  ": its instructions cannot run out of line, so threads inside "
                                                  "them could not be moved: " + old_copy.error().message);
    }
    generation->sites.push_back(f);
  }
  for (std::size_t b = 0; b < generation->blocks.size(); ++b) {
    const CopyBlock& block = generation->blocks[b];
    if (auto written = (*heap)->writer().write(block.address, std::span(image).subspan(block_offset[b], block.size));
        !written) {
      free_copies(*generation);
      return fail(std::move(written).error().with_context(
          "writing the out-of-line copies of " + site_name(sites[0].index, sites[0].address) +
          (sites.size() > 1 ? " and " + std::to_string(sites.size() - 1) + " more" : "") +
          " (nothing at the sites changed)"));
    }
  }
  // Sites come sorted by address from validation, so the generation's are too.
  return generation;
}

Status check_copies(std::span<const Site> sites, const TransactionOptions& options) {
  PUNCH_TRY_ASSIGN(const CheckedBatch batch,
                   check_sites(sites, options, Direction::kApply, ErrorCode::kBytesMismatch, CopyRoom::kReserve));
  PUNCH_TRY_ASSIGN(const auto generation, build_generation(batch, options.trap));
  free_copies(*generation);
  return {};
}

void drain_copies(const Generation& generation, std::chrono::milliseconds timeout) {
  std::vector<runtime::CodeRange> copies;
  for (const CopyBlock& b : generation.blocks) copies.push_back({b.address, b.address + b.size});
  if (copies.empty()) return;
  // A thread leaves a copy within a few instructions once it runs, so the
  // first look usually finds them empty; otherwise look again after a pause
  // that grows (each look signals every thread: back to back they would
  // starve the very threads being waited for).
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::microseconds(100);
  for (;;) {
    auto in_use = runtime::ranges_in_use(copies, timeout);
    if (!in_use || std::none_of(in_use->begin(), in_use->end(), [](bool b) { return b; })) return;
    if (std::chrono::steady_clock::now() + pause >= deadline) return;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(10000));
  }
}

void free_copies(Generation& generation) {
  auto heap = runtime::CodeHeap::global();
  if (heap)
    for (const CopyBlock& b : generation.blocks) (void)(*heap)->free(b.address);
  generation.blocks.clear();
}

bool reclaim_due() {
  constexpr std::size_t kMaxRetainedBytes = std::size_t{1} << 20;
  // Published generations are draining ones, but for at most the one in
  // flight and any kept after a failed rollback.
  const PublishedTotals published = published_totals();
  return published.generations >= kMaxGenerations * 3 / 4 || published.copy_bytes >= kMaxRetainedBytes;
}

namespace {

// Generations unpublished early whose copies a thread entered meanwhile
// (after they were found unentered): they wait for the next round. Under the live lock.
std::vector<Generation*>& orphans() {
  static auto* list = new std::vector<Generation*>;  // Never destroyed: commits may run during static destruction.
  return *list;
}

// No thread was ever sent into its copies (trap redirects count on the
// generation), and no thread can be moved into one (no fix-up copies): once
// unpublished, nothing can enter them either.
bool copies_unentered(const Generation& g) {
  if (g.copies_entered.load(std::memory_order_seq_cst) != 0) return false;
  return std::none_of(g.sites.begin(), g.sites.end(), [](const FlightSite& s) { return s.fixup_copy != 0; });
}

}  // namespace

Result<std::size_t> reclaim_generations(std::chrono::milliseconds timeout) {
  std::vector<Generation*> candidates;
  std::vector<runtime::CodeRange> ranges;
  std::vector<std::size_t> owner;  // Per range: its generation in `candidates`.
  auto add_candidate = [&](Generation* g) {
    for (const CopyBlock& b : g->blocks) {
      ranges.push_back({b.address, b.address + b.size});
      owner.push_back(candidates.size());
    }
    candidates.push_back(g);
  };
  for (Generation* g : published_generations()) {
    if (g->state.load(std::memory_order_acquire) != GenerationState::kDraining) continue;
    // No thread inside its copies (or no copies at all): its sites are
    // remembered for the trap handler, and it goes now, with no sync and no
    // rendezvous (see remember_retired_sites). Only a full table, or copies
    // a thread entered, need the round below.
    if (copies_unentered(*g) && remember_retired_sites(*g)) {
      unpublish(g);  // After this no handler reads it, so no thread can still be sent into its copies.
      if (g->copies_entered.load(std::memory_order_seq_cst) != 0) {
        orphans().push_back(g);  // Entered between the two looks: freed after a round.
        continue;
      }
      free_copies(*g);  // The heap fills freed space with int3 and syncs before handing it out again.
      delete g;
      g_counters.generations_retired_early.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    add_candidate(g);
  }
  std::vector<Generation*> waiting = std::move(orphans());
  orphans().clear();
  for (Generation* g : waiting) add_candidate(g);
  if (candidates.empty()) return 0;
  // Orphans not freed by this call wait for the next one.
  auto keep_orphans = [&](const std::vector<bool>& freed) {
    for (std::size_t i = 0; i < candidates.size(); ++i)
      if (!freed[i] && std::find(waiting.begin(), waiting.end(), candidates[i]) != waiting.end())
        orphans().push_back(candidates[i]);
  };

  // A run ends without a last sync (see live_protocol.cpp): a core may still
  // see a stale trap byte of a draining generation, whose handler must then
  // find it. This sync ends that: afterwards no thread meets those bytes.
  if (auto synced = runtime::sync_all_threads(timeout); !synced) {
    keep_orphans(std::vector<bool>(candidates.size(), false));
    return tl::unexpected(std::move(synced).error());
  }

  // Then one rendezvous reads every thread's rip (an unanswered thread counts
  // as inside unless proven blocked in a syscall outside). An answer also
  // proves the thread is not between a trap and its handler: the trap handler
  // blocks every signal while it runs, and a trap's signal is delivered before
  // the rendezvous signal. The empty range stands for that proof alone: it is
  // in use only when some thread could not be placed at all.
  ranges.push_back({0, 0});
  auto in_use = runtime::ranges_in_use(ranges, timeout);
  if (!in_use || in_use->back()) {  // Failed, or some thread may still be about to run a trap handler.
    keep_orphans(std::vector<bool>(candidates.size(), false));
    if (!in_use) return tl::unexpected(std::move(in_use).error());
    return candidates.size();
  }
  // Every thread answered: none is between a trap and its handler, so the
  // sites remembered before this round are needed no more.
  forget_retired_sites();
  std::vector<bool> busy(candidates.size(), false);
  for (std::size_t r = 0; r + 1 < ranges.size(); ++r)
    if ((*in_use)[r]) busy[owner[r]] = true;
  g_counters.reclaim_rounds.fetch_add(1, std::memory_order_relaxed);
  std::size_t retained = 0;
  std::vector<bool> freed(candidates.size(), false);
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    if (busy[i]) {
      ++retained;
      continue;
    }
    Generation* g = candidates[i];
    unpublish(g);  // An orphan is no longer published: then this only waits for readers.
    // The heap fills freed space with int3 and syncs before handing it out again.
    free_copies(*g);
    delete g;
    freed[i] = true;
    g_counters.copies_freed.fetch_add(1, std::memory_order_relaxed);
  }
  keep_orphans(freed);
  return retained;
}

}  // namespace punch::patcher::live
