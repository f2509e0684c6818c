// Out-of-line copies and their reclamation.
//
// A copy runs the replaced instructions at another address, then jumps back to
// the end of the site. A `call` as the last instruction is emulated: push the
// ORIGINAL return address (the site's end) and jump to the callee, so no return
// address ever points into a copy. A thread's rip is then the only way it can
// be inside a copy, which is what the reclamation rendezvous checks.
#include "out_of_line.hpp"

#include <algorithm>
#include <cstring>

#include <punch/disasm/instruction.hpp>
#include <punch/disasm/relocate.hpp>
#include <punch/runtime/code_heap.hpp>
#include <punch/runtime/threads.hpp>

namespace punch::patcher::live {
namespace {

// Bytes a copy may add after the relocated instructions: push imm32 (5) +
// mov dword [rsp+4], imm32 (8) + an absolute jmp (14).
constexpr std::size_t kTailBound = 5 + 8 + 14;
constexpr std::size_t kCopyAlign = 16;

struct Copy {
  std::vector<std::uint8_t> bytes;
  std::vector<disasm::OffsetMapping> offsets;
};

void append(std::vector<std::uint8_t>& out, std::span<const std::uint8_t> bytes) {
  out.insert(out.end(), bytes.begin(), bytes.end());
}

void append_jump(std::vector<std::uint8_t>& out, std::uintptr_t from, std::uintptr_t to) {
  auto near = disasm::encode_jmp_rel32(from, to);
  append(out, near ? *near : disasm::encode_jmp_absolute(to));
}

void append_u32(std::vector<std::uint8_t>& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

// The instructions [address, address+bytes.size()) relocated to `destination`, then the way back.
Result<Copy> make_copy(std::uintptr_t address, std::span<const std::uint8_t> bytes, std::uintptr_t destination) {
  auto insns = disasm::decode_all(disasm::CodeSpan{address, bytes});
  if (!insns) return tl::unexpected(std::move(insns).error());
  const disasm::Instruction& last = insns->back();
  if (last.flow == disasm::Flow::kIndirectCall)
    return fail(ErrorCode::kCannotRelocate, at(last.address) +
                                                ": an indirect call cannot end an out-of-line copy (its return "
                                                "address would point into the copy)");
  const bool final_call = last.flow == disasm::Flow::kCall;
  const std::size_t body = final_call ? last.address - address : bytes.size();
  Copy copy;
  if (body > 0) {
    auto moved = disasm::relocate(disasm::CodeSpan{address, bytes.first(body)}, destination,
                                  disasm::RelocateOptions{.allow_final_call = false});
    if (!moved) return tl::unexpected(std::move(moved).error());
    copy.bytes = std::move(moved->bytes);
    copy.offsets = std::move(moved->offsets);
  }
  const std::uintptr_t back = address + bytes.size();
  if (final_call) {
    copy.offsets.push_back({static_cast<std::uint32_t>(body), static_cast<std::uint32_t>(copy.bytes.size())});
    copy.bytes.push_back(0x68);  // push imm32 (sign-extended): the low half of the return address...
    append_u32(copy.bytes, static_cast<std::uint32_t>(back));
    const std::uint8_t mov_high[] = {0xC7, 0x44, 0x24, 0x04};  // ...mov dword [rsp+4], imm32: the high half.
    append(copy.bytes, mov_high);
    append_u32(copy.bytes, static_cast<std::uint32_t>(back >> 32));
    append_jump(copy.bytes, destination + copy.bytes.size(), last.branch_target);
  } else {
    append_jump(copy.bytes, destination + copy.bytes.size(), back);
  }
  return copy;
}

// Whether a thread can be strictly inside the run: not when its first instruction
// never falls through (a jump out of it, a return) — the rest is then unreachable,
// since validation refused branches from outside into the run.
bool interior_reachable(std::uintptr_t address, std::span<const std::uint8_t> bytes) {
  auto first = disasm::decode(disasm::CodeSpan{address, bytes}, address);
  if (!first || first->length == bytes.size()) return false;
  if (first->flow == disasm::Flow::kReturn) return false;
  if (first->flow == disasm::Flow::kJump)
    return first->branch_target > address && first->branch_target < address + bytes.size();
  return true;
}

std::size_t bound_of(std::uintptr_t address, std::span<const std::uint8_t> bytes) {
  auto b = disasm::relocated_size_bound(disasm::CodeSpan{address, bytes});
  return b ? *b : 0;
}

// The window every copy of the batch should lie in: within rel32 reach of every site.
runtime::AddressWindow window_for(std::span<const CheckedSite> sites) {
  runtime::AddressWindow w;
  for (const CheckedSite& s : sites)
    if (s.is_code)
      w = w.intersect(runtime::AddressWindow::rel32_reach(s.address))
              .intersect(runtime::AddressWindow::rel32_reach(s.end()));
  return w;
}

struct ReclaimRound {
  std::vector<Generation*> candidates;
  std::unique_ptr<std::atomic<bool>[]> busy;
};

// Runs on every other thread: marks the generations whose copies hold its rip.
void mark_busy(ucontext_t* context, void* arg) {
  auto* round = static_cast<ReclaimRound*>(arg);
  const auto rip = static_cast<std::uintptr_t>(context->uc_mcontext.gregs[REG_RIP]);
  for (std::size_t i = 0; i < round->candidates.size(); ++i)
    if (round->candidates[i]->copies_hold(rip)) round->busy[i].store(true, std::memory_order_relaxed);
}

}  // namespace

Result<std::unique_ptr<Generation>> build_generation(std::span<const CheckedSite> sites, TrapInstruction trap) {
  auto generation = std::make_unique<Generation>();
  generation->trap = trap;

  // Slot sizes: room for either the old or the new code, plus the way back.
  std::vector<std::size_t> slot_offset(sites.size(), 0);
  std::size_t total = 0;
  for (std::size_t i = 0; i < sites.size(); ++i) {
    if (!sites[i].is_code) continue;
    const std::size_t need = std::max(bound_of(sites[i].address, sites[i].from), bound_of(sites[i].address, sites[i].to));
    slot_offset[i] = total;
    total += (need + kTailBound + kCopyAlign - 1) / kCopyAlign * kCopyAlign;
  }
  if (total == 0) return generation;  // Data sites only.

  auto heap = runtime::CodeHeap::global();
  if (!heap) return tl::unexpected(std::move(heap).error());
  auto block = (*heap)->allocate(total, kCopyAlign, window_for(sites));
  if (!block) block = (*heap)->allocate(total, kCopyAlign);  // Far away; relocation says if that is not enough.
  if (!block) return tl::unexpected(std::move(block).error());
  generation->blocks.push_back({*block, total});

  std::vector<std::uint8_t> image(total, 0xCC);
  for (std::size_t i = 0; i < sites.size(); ++i) {
    const CheckedSite& s = sites[i];
    if (!s.is_code) continue;
    const std::uintptr_t destination = *block + slot_offset[i];
    FlightSite f;
    f.address = s.address;
    f.length = static_cast<std::uint32_t>(s.from.size());
    auto old_copy = make_copy(s.address, s.from, destination);
    if (old_copy) {
      std::memcpy(image.data() + slot_offset[i], old_copy->bytes.data(), old_copy->bytes.size());
      f.redirect = destination;
      if (s.from_instructions > 1 && interior_reachable(s.address, s.from)) {
        f.fixup_copy = destination;
        f.offsets_begin = static_cast<std::uint32_t>(generation->offsets.size());
        f.offsets_count = static_cast<std::uint32_t>(old_copy->offsets.size());
        generation->offsets.insert(generation->offsets.end(), old_copy->offsets.begin(), old_copy->offsets.end());
      }
    } else if (s.from_instructions == 1) {
      // One old instruction that cannot move (e.g. syscall): trapping threads run the new code in full.
      auto new_copy = make_copy(s.address, s.to, destination);
      if (!new_copy) {
        free_copies(*generation);
        return fail(ErrorCode::kCannotRelocate, site_name(s.index, s.address) +
                                                    ": neither the old nor the new code can run out of line: " +
                                                    old_copy.error().message + "; " + new_copy.error().message);
      }
      std::memcpy(image.data() + slot_offset[i], new_copy->bytes.data(), new_copy->bytes.size());
      f.redirect = destination;
    } else {
      free_copies(*generation);
      return fail(ErrorCode::kCannotRelocate, site_name(s.index, s.address) +
                                                  ": its instructions cannot run out of line, so threads inside "
                                                  "them could not be moved: " + old_copy.error().message);
    }
    generation->sites.push_back(f);
  }
  if (auto written = (*heap)->writer().write(*block, image); !written) {
    free_copies(*generation);
    return tl::unexpected(std::move(written).error());
  }
  std::sort(generation->sites.begin(), generation->sites.end(),
            [](const FlightSite& a, const FlightSite& b) { return a.address < b.address; });
  return generation;
}

void free_copies(Generation& generation) {
  auto heap = runtime::CodeHeap::global();
  if (heap)
    for (const CopyBlock& b : generation.blocks) (void)(*heap)->free(b.address);
  generation.blocks.clear();
}

std::size_t draining_generations() {
  std::size_t n = 0;
  for (Generation* g : published_generations())
    if (g->state.load(std::memory_order_acquire) == GenerationState::kDraining) ++n;
  return n;
}

Result<std::size_t> reclaim_generations(std::chrono::milliseconds timeout) {
  ReclaimRound round;
  for (Generation* g : published_generations())
    if (g->state.load(std::memory_order_acquire) == GenerationState::kDraining) round.candidates.push_back(g);
  if (round.candidates.empty()) return 0;
  round.busy = std::make_unique<std::atomic<bool>[]>(round.candidates.size());
  for (std::size_t i = 0; i < round.candidates.size(); ++i) round.busy[i].store(false);

  // Each answer also proves the thread is not between a trap and its handler:
  // the trap handler blocks the rendezvous signal until it returns.
  auto rendezvous = runtime::visit_other_threads(mark_busy, &round, timeout);
  if (!rendezvous) return tl::unexpected(std::move(rendezvous).error());
  for (pid_t tid : rendezvous->unanswered) {
    auto blocked = runtime::blocked_syscall_address(tid);
    for (std::size_t i = 0; i < round.candidates.size(); ++i)
      if (!blocked || round.candidates[i]->copies_hold(*blocked)) round.busy[i].store(true);
  }
  g_counters.reclaim_rounds.fetch_add(1, std::memory_order_relaxed);
  std::size_t retained = 0;
  for (std::size_t i = 0; i < round.candidates.size(); ++i) {
    if (round.busy[i].load()) {
      ++retained;
      continue;
    }
    Generation* g = round.candidates[i];
    unpublish(g);
    // The heap fills freed space with int3 and syncs before handing it out again.
    free_copies(*g);
    delete g;
    g_counters.copies_freed.fetch_add(1, std::memory_order_relaxed);
  }
  return retained;
}

}  // namespace punch::patcher::live
