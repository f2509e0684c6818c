// Building out-of-line copies.
//
// A copy runs the replaced instructions at another address, then jumps back to
// the end of the site. A `call` as the last instruction (direct or indirect)
// is emulated: push the ORIGINAL return address (the site's end) and jump to
// the callee, so no return address ever points into a copy (a thread's rip is
// then the only way it can be inside one: copy_reclamation.cpp). RIP-relative
// operands that read the site's own bytes read the copy's (the site's code
// works as a unit at the copy's address).
#include "copy_reclamation.hpp"
#include "out_of_line.hpp"

#include <algorithm>
#include <cstring>

#include <punch/disasm/instruction.hpp>
#include <punch/disasm/instruction_facts.hpp>
#include <punch/disasm/relocate.hpp>
#include <punch/runtime/code_heap.hpp>

#include "code_names.hpp"
#include "site_messages.hpp"
#include "site_validation.hpp"
#include "trap_emulation.hpp"

namespace punch::patcher::live {
namespace {

constexpr std::size_t kCopyAlign = 16;

// A copy being written into its slot of the block image.
struct Slot {
  std::uintptr_t address = 0;     // Where the slot lives.
  std::span<std::uint8_t> bytes;  // Its part of the image.
  std::size_t used = 0;
  bool overflow = false;  // A copy outgrew its bound (never expected): refused, not written.

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
    if (near)
      append(*near);
    else
      append(disasm::encode_jmp_absolute(to));
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

// An upper bound on a copy's relocated instructions (the tail comes on top).
Result<std::size_t> copy_bound(std::uintptr_t address, std::span<const std::uint8_t> bytes, bool plain) {
  if (plain) return bytes.size();
  return disasm::relocated_size_bound(disasm::CodeSpan{address, bytes});
}

// Where a copy of site `s` may lie: within rel32 reach of the site and of
// every RIP-relative operand its old code reads (relocation has no absolute
// form for data).
runtime::AddressWindow reach_of(const CheckedBatch& batch, const CheckedSite& s) {
  runtime::AddressWindow w =
      runtime::AddressWindow::rel32_reach(s.address).intersect(runtime::AddressWindow::rel32_reach(s.end()));
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
    choose_emulation(flights[i], s.from, batch.old_instructions(s));
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
        if (!own)
          own = (*heap)->allocate(slot_size(i), kCopyAlign);  // Far away; relocation says if that is not enough.
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
    const bool fixup = disasm::interior_reachable({s.address, s.from}, insns);
    const std::size_t offsets_before = generation->offsets.size();
    auto old_copy = write_copy(s.address, s.from, insns, s.from_plain, slot, fixup ? &generation->offsets : nullptr);
    if (old_copy) {
      generation->copies_may_leave |= disasm::may_leave({s.address, s.from}, insns);
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
      generation->copies_may_leave |= !new_insns || disasm::may_leave({s.address, s.to}, *new_insns);
    } else {
      free_copies(*generation);
      return fail(ErrorCode::kCannotRelocate, site_name(s.index, s.address) +
                                                  ": its instructions cannot run out of line, so threads inside "
                                                  "them could not be moved: " +
                                                  old_copy.error().message);
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
  for (std::size_t i = 0; i < sites.size(); ++i)
    if (slot_size(i) > 0 && slot_address[i] != 0)
      detail::register_punch_code(slot_address[i], slot_size(i), "copy", sites[i].address,
                                  runtime::CodeKind::kOutOfLineCopy);
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

}  // namespace punch::patcher::live
