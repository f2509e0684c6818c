// Instruction relocation: the same behaviour from another address.
//
// Each source instruction becomes one "item" with a kind that fixes how it is
// re-encoded. Branch items have several forms of growing size (rel8, rel32,
// absolute); sizes are found by a fixed point: start at the smallest form,
// lay the run out, grow any item whose form no longer reaches, repeat. Sizes
// only grow, so this ends; a larger form always reaches whatever a smaller
// one does, so the final layout is emitted with exactly the sizes chosen.
#include <punch/disasm/relocate.hpp>

#include <algorithm>
#include <cstring>
#include <optional>

#include "encoding.hpp"
#include "zydis_decode.hpp"

namespace punch::disasm {
namespace {

using detail::rel32_between;
using detail::rel8_between;

enum class Kind {
  kCopy,                //!< Position-independent: copied as is.
  kRipData,             //!< RIP-relative memory operand: displacement patched in place (length unchanged).
  kRelImm32,            //!< Another rel32 immediate (xbegin): patched in place.
  kJump,                //!< jmp rel8/rel32.
  kCondJump,            //!< jcc rel8/rel32.
  kShortOnly,           //!< jrcxz/jecxz/loop/loope/loopne.
  kCall,                //!< call rel32.
  kCallNext,            //!< call to the next instruction: emulated by pushing the original return address.
  kCallAsJump,          //!< Final call rel32 (final_call_as_jump): push the original return address, jmp.
  kIndirectCallAsJump,  //!< Final `call r/m64` (final_call_as_jump): push it, then `jmp r/m64` (same operand).
};

struct Item {
  Instruction insn;
  Kind kind = Kind::kCopy;
  std::uint8_t cc = 0;            //!< Condition code of a jcc.
  bool internal = false;          //!< The target is an instruction of the run.
  std::size_t target_index = 0;   //!< Which one, when internal.
  std::uintptr_t target = 0;      //!< Absolute target (branch or memory), when not internal.
  bool data_internal = false;     //!< The RIP-relative operand reads bytes of the run itself...
  std::size_t data_index = 0;     //!< ...inside this (copied as is) instruction.
  std::size_t data_width = 0;     //!< Bytes the operand reads (at least 1).
  std::size_t push_size = 0;      //!< k*CallAsJump: bytes of the push of the original return address.
  std::uint8_t modrm_offset = 0;  //!< kIndirectCallAsJump: where the ModRM byte is.
  std::size_t size = 0;           //!< Bytes in the relocated code.
  std::size_t offset = 0;         //!< Where in the relocated code.
};

std::string name(CodeSpan source, const Instruction& insn) { return "`" + format(source, insn.address) + "`"; }

bool has_prefix(const ZydisDecodedInstruction& insn, std::uint8_t value) {
  for (std::uint8_t i = 0; i < insn.raw.prefix_count; ++i)
    if (insn.raw.prefixes[i].value == value) return true;
  return false;
}

// Sizes of the forms of each branch kind, smallest first.
constexpr std::size_t kJumpForms[] = {2, 5, 14};
constexpr std::size_t kCondForms[] = {2, 6, 16};  // Absolute: inverted jcc rel8 over a 14-byte jmp.
constexpr std::size_t kCallForms[] = {5, 16};
constexpr std::size_t kTailForms[] = {5, 14};  // The jmp after an expanded jrcxz/loop.
constexpr std::size_t kShortExpansion = 2;     // The `jmp short` over the tail.

// Whether a `call r/m64` operand depends on rsp (which the push before the jmp moves).
bool operand_uses_rsp(const ZydisDecodedInstruction& z) {
  const auto& m = z.raw.modrm;
  if (m.rm != 4 || z.raw.rex.B) return false;
  return m.mod == 3 || z.raw.sib.base == 4;  // `call rsp`, or a SIB with base rsp.
}

// Classifies one decoded instruction of the run, or refuses it with the reason and address.
Status classify(CodeSpan source, const detail::ZydisView& view, const Instruction& insn, RelocateOptions options,
                Item& item) {
  item.insn = insn;
  const auto& z = view.insn;
  const auto refuse = [&](ErrorCode code, const std::string& why) {
    return fail(code, insn.address, "cannot relocate " + name(source, insn) + ": " + why);
  };

  if (insn.flow == Flow::kSyscall)
    return refuse(ErrorCode::kCannotRelocate,
                  "a thread inside this system call or interrupt resumes at the original address, "
                  "which the patch replaces");
  const bool real_call = calls_out(insn);
  if (real_call && !options.allow_final_call)
    return refuse(ErrorCode::kCannotRelocate, "calls are not allowed in this run (allow_final_call is off)");
  PUNCH_TRY(check_call_is_last(source, insn, source.end()));
  if (real_call && options.final_call_as_jump) {
    item.push_size = detail::push_fits_imm32(insn.end()) ? detail::kPushShortSize : detail::kPushLongSize;
    if (insn.flow == Flow::kIndirectCall) {
      if (z.opcode != 0xFF || z.raw.modrm.reg != 2)
        return refuse(ErrorCode::kCannotRelocate, "only `call r/m64` can become a push and a jump");
      if (operand_uses_rsp(z))
        return refuse(ErrorCode::kCannotRelocate,
                      "its operand is addressed by rsp, which the pushed return address would move");
      item.kind = Kind::kIndirectCallAsJump;
      item.modrm_offset = z.raw.modrm.offset;
      item.target = insn.memory_target;
      item.size = item.push_size + insn.length;
      if (insn.has_memory_target && z.address_width != 64)
        return refuse(ErrorCode::kCannotRelocate, "EIP-relative operand (address-size prefix) is not supported");
      if (insn.has_memory_target) item.data_width = 8;
      return {};
    }
  }

  if (insn.has_memory_target) {
    if (z.address_width != 64)
      return refuse(ErrorCode::kCannotRelocate, "EIP-relative operand (address-size prefix) is not supported");
    item.kind = Kind::kRipData;
    item.target = insn.memory_target;
    item.data_width = std::max<std::size_t>(z.operand_width / 8, 1);
    item.size = insn.length;
    return {};
  }
  if (!insn.has_branch_target) {
    item.kind = Kind::kCopy;
    item.size = insn.length;
    return {};
  }

  // A relative immediate.
  if (has_prefix(z, 0x66))
    return refuse(ErrorCode::kCannotRelocate,
                  "operand-size prefix on a relative branch (its meaning differs between Intel and AMD)");
  item.target = insn.branch_target;
  if (source.contains(insn.branch_target)) {
    item.internal = true;  // Resolved to an instruction index by the caller.
  }
  switch (insn.flow) {
    case Flow::kJump:
      item.kind = Kind::kJump;
      item.size = kJumpForms[0];
      break;
    case Flow::kCondJump:
      item.kind = Kind::kCondJump;
      item.cc = z.opcode & 0x0F;
      item.size = kCondForms[0];
      break;
    case Flow::kShortOnly:
      item.kind = Kind::kShortOnly;
      item.size = insn.length;
      break;
    case Flow::kCall:
      if (insn.branch_target == insn.end()) {
        item.kind = Kind::kCallNext;
        item.internal = false;
        item.size = detail::push_fits_imm32(insn.end()) ? detail::kPushShortSize : detail::kPushLongSize;
      } else if (options.final_call_as_jump) {
        item.kind = Kind::kCallAsJump;
        item.size = item.push_size + kJumpForms[1];
      } else {
        item.kind = Kind::kCall;
        item.size = kCallForms[0];
      }
      break;
    default:
      if (insn.rel_size != 4)
        return refuse(ErrorCode::kCannotRelocate,
                      "relative operand of " + std::to_string(insn.rel_size) + " bytes has no wider form");
      item.kind = Kind::kRelImm32;
      item.size = insn.length;
      break;
  }
  return {};
}

// The smallest form (size) of a branch item that reaches its target from the current layout.
std::size_t needed_size(const Item& item, const std::vector<Item>& items, std::uintptr_t destination) {
  const std::uintptr_t here = destination + item.offset;
  const std::uintptr_t to = item.internal ? destination + items[item.target_index].offset : item.target;
  std::int8_t r8;
  std::int32_t r32;
  switch (item.kind) {
    case Kind::kJump:
      if (rel8_between(here + kJumpForms[0], to, r8)) return kJumpForms[0];
      if (rel32_between(here + kJumpForms[1], to, r32)) return kJumpForms[1];
      return kJumpForms[2];
    case Kind::kCondJump:
      if (rel8_between(here + kCondForms[0], to, r8)) return kCondForms[0];
      if (rel32_between(here + kCondForms[1], to, r32)) return kCondForms[1];
      return kCondForms[2];
    case Kind::kCall:
      if (rel32_between(here + kCallForms[0], to, r32)) return kCallForms[0];
      return kCallForms[1];
    case Kind::kCallAsJump:
      if (rel32_between(here + item.push_size + kJumpForms[1], to, r32)) return item.push_size + kJumpForms[1];
      return item.push_size + kJumpForms[2];
    case Kind::kShortOnly: {
      const std::size_t len = item.insn.length;
      if (rel8_between(here + len, to, r8)) return len;
      const std::uintptr_t tail = here + len + kShortExpansion;
      if (rel32_between(tail + kTailForms[0], to, r32)) return len + kShortExpansion + kTailForms[0];
      return len + kShortExpansion + kTailForms[1];
    }
    default: return item.size;
  }
}

// Writes one item at its offset; the sizes are final.
Status emit(CodeSpan source, const Item& item, const std::vector<Item>& items, std::uintptr_t destination,
            std::vector<std::uint8_t>& out) {
  const Instruction& insn = item.insn;
  const std::uintptr_t here = destination + item.offset;
  const Item& holder = items[item.data_index];
  const std::uintptr_t to = item.internal        ? destination + items[item.target_index].offset
                            : item.data_internal ? destination + holder.offset + (item.target - holder.insn.address)
                                                 : item.target;
  const std::uint8_t* original = source.bytes.data() + (insn.address - source.address);
  const std::size_t start = out.size();
  std::int8_t r8 = 0;
  std::int32_t r32 = 0;

  switch (item.kind) {
    case Kind::kCopy: out.insert(out.end(), original, original + insn.length); break;
    case Kind::kIndirectCallAsJump:
      detail::emit_push_constant(out, insn.end());
      if (!insn.has_memory_target) {  // `call reg` -> `jmp reg`: ModRM.reg 2 -> 4.
        out.insert(out.end(), original, original + insn.length);
        out[start + item.push_size + item.modrm_offset] ^= 0x30;
        break;
      }
      [[fallthrough]];
    case Kind::kRipData:
    case Kind::kRelImm32: {
      // The length does not change, so only the 4-byte field moves: patch it in place.
      const std::size_t at_insn = out.size();  // After the push, for a call made a jump.
      if (!rel32_between(here + (at_insn - start) + insn.length, to, r32)) {
        const char* what = item.kind == Kind::kRelImm32 ? "its target " : "its RIP-relative operand ";
        return fail(ErrorCode::kOutOfRange, insn.address,
                    "cannot relocate " + name(source, insn) + " to " + at(here) + ": " + what + at(to) +
                        " would be more than 2 GiB away and it has no absolute form");
      }
      out.insert(out.end(), original, original + insn.length);
      std::uint32_t field = static_cast<std::uint32_t>(r32);
      for (int i = 0; i < 4; ++i) out[at_insn + insn.rel_offset + i] = static_cast<std::uint8_t>(field >> (8 * i));
      if (item.kind == Kind::kIndirectCallAsJump) out[at_insn + item.modrm_offset] ^= 0x30;  // call -> jmp r/m64.
      break;
    }
    case Kind::kJump:
      if (item.size == kJumpForms[0] && rel8_between(here + 2, to, r8))
        detail::emit_jmp_rel8(out, r8);
      else if (item.size == kJumpForms[1] && rel32_between(here + 5, to, r32))
        detail::emit_jmp_rel32(out, r32);
      else
        detail::emit_jmp_absolute(out, to);
      break;
    case Kind::kCondJump:
      if (item.size == kCondForms[0] && rel8_between(here + 2, to, r8)) {
        detail::emit_jcc_rel8(out, item.cc, r8);
      } else if (item.size == kCondForms[1] && rel32_between(here + 6, to, r32)) {
        detail::emit_jcc_rel32(out, item.cc, r32);
      } else {
        // Inverted condition skips the absolute jump.
        detail::emit_jcc_rel8(out, static_cast<std::uint8_t>(item.cc ^ 1), 14);
        detail::emit_jmp_absolute(out, to);
      }
      break;
    case Kind::kCall:
      if (item.size == kCallForms[0] && rel32_between(here + 5, to, r32))
        detail::emit_call_rel32(out, r32);
      else
        detail::emit_call_absolute(out, to);
      break;
    case Kind::kCallAsJump:
      detail::emit_push_constant(out, insn.end());
      if (item.size == item.push_size + kJumpForms[1] && rel32_between(here + item.size, to, r32))
        detail::emit_jmp_rel32(out, r32);
      else
        detail::emit_jmp_absolute(out, to);
      break;
    case Kind::kCallNext:
      // Pushes what the original call pushes (its original return address),
      // so call-next/pop PIC code still computes addresses of the original image.
      detail::emit_push_constant(out, insn.end());
      break;
    case Kind::kShortOnly: {
      const std::size_t len = insn.length;
      out.insert(out.end(), original, original + len);
      if (item.size == len && rel8_between(here + len, to, r8)) {
        out[start + insn.rel_offset] = static_cast<std::uint8_t>(r8);
        break;
      }
      // `op L1; jmp short L2; L1: jmp target; L2:` — the same condition, any reach.
      out[start + insn.rel_offset] = kShortExpansion;
      const std::size_t tail = item.size - len - kShortExpansion;
      detail::emit_jmp_rel8(out, static_cast<std::int8_t>(tail));
      const std::uintptr_t tail_at = here + len + kShortExpansion;
      if (tail == kTailForms[0] && rel32_between(tail_at + 5, to, r32))
        detail::emit_jmp_rel32(out, r32);
      else
        detail::emit_jmp_absolute(out, to);
      break;
    }
  }
  if (out.size() - start != item.size)
    return fail(ErrorCode::kCannotRelocate, insn.address,
                "internal error: relocated " + name(source, insn) + " to " + std::to_string(out.size() - start) +
                    " bytes, expected " + std::to_string(item.size));
  return {};
}

// Decodes and classifies every instruction of the run; resolves internal targets to indices.
Result<std::vector<Item>> build_items(CodeSpan source, RelocateOptions options) {
  if (source.bytes.empty())
    return fail(ErrorCode::kInvalidArgument, source.address, "nothing to relocate (empty span)");
  std::vector<Item> items;
  items.reserve(source.bytes.size());  // At most one instruction per byte: no regrowth.
  detail::ZydisView view;
  std::optional<Instruction> call_next_inside;  // A call-next that pushed an address inside the run.
  for (std::uintptr_t a = source.address; a < source.end();) {
    Instruction insn;
    PUNCH_TRY(detail::decode_into(source, a, view, insn));
    Item item;
    PUNCH_TRY(classify(source, view, insn, options, item));
    // The copy pushes the original return address (data semantics for call/pop
    // PIC code); a `ret` that may consume it returns into the original run,
    // which the patch replaces, where the original returns inside itself.
    if (insn.flow == Flow::kReturn && call_next_inside)
      return fail(ErrorCode::kCannotRelocate, at(insn.address) + ": cannot relocate " + name(source, insn) +
                                                  ": it may return to " + at(call_next_inside->end()) +
                                                  ", inside the run, where the call at " +
                                                  at(call_next_inside->address) + " pushed it");
    items.push_back(item);
    if (item.kind == Kind::kCallNext && insn.end() != source.end()) call_next_inside = insn;
    a = insn.end();
  }
  // Data read from the run itself is read from the same bytes of the copy:
  // they must be copied as they are, and the read must stay inside them.
  for (Item& item : items) {
    if (item.data_width == 0 || !source.contains(item.target)) continue;
    std::size_t i = 0;
    while (i < items.size() && items[i].insn.end() <= item.target) ++i;
    if (items[i].kind != Kind::kCopy || item.target + item.data_width > items[i].insn.end())
      return fail(ErrorCode::kCannotRelocate, item.insn.address,
                  "cannot relocate " + name(source, item.insn) + ": it reads " + at(item.target) +
                      ", bytes of the run that the copy does not keep as they are");
    item.data_internal = true;
    item.data_index = i;
  }
  for (Item& item : items) {
    if (!item.internal) continue;
    std::size_t i = 0;
    while (i < items.size() && items[i].insn.address != item.target) ++i;
    if (i == items.size())
      return fail(ErrorCode::kCannotRelocate, item.insn.address,
                  "cannot relocate " + name(source, item.insn) + ": it branches to " + at(item.target) +
                      ", inside another instruction of the run");
    item.target_index = i;
  }
  return items;
}

}  // namespace

Result<Relocation> relocate(CodeSpan source, std::uintptr_t destination, RelocateOptions options) {
  auto built = build_items(source, options);
  if (!built) return tl::unexpected(std::move(built).error());
  std::vector<Item>& items = *built;

  // Fixed point over the sizes (see the file comment).
  std::size_t total = 0;
  for (bool grew = true; grew;) {
    total = 0;
    for (Item& item : items) {
      item.offset = total;
      total += item.size;
    }
    grew = false;
    for (Item& item : items) {
      const std::size_t need = needed_size(item, items, destination);
      if (need > item.size) {
        item.size = need;
        grew = true;
      }
    }
  }

  Relocation out;
  out.address = destination;
  out.source_length = static_cast<std::uint32_t>(source.bytes.size());
  out.bytes.reserve(total);
  out.offsets.reserve(items.size());
  for (const Item& item : items) {
    PUNCH_TRY(emit(source, item, items, destination, out.bytes));
    out.offsets.push_back(
        {static_cast<std::uint32_t>(item.insn.address - source.address), static_cast<std::uint32_t>(item.offset)});
  }
  return out;
}

Result<std::size_t> relocated_size_bound(CodeSpan source) {
  auto built = build_items(source, {});
  if (!built) return tl::unexpected(std::move(built).error());
  std::size_t total = 0;
  for (const Item& item : *built) {
    switch (item.kind) {
      case Kind::kJump: total += kJumpForms[2]; break;
      case Kind::kCondJump: total += kCondForms[2]; break;
      case Kind::kCall:
      case Kind::kCallAsJump:  // Either form, whichever the options pick.
        total += std::max(kCallForms[1], detail::kPushLongSize + kJumpForms[2]);
        break;
      case Kind::kShortOnly: total += item.insn.length + kShortExpansion + kTailForms[1]; break;
      default: total += item.size; break;
    }
    if (item.insn.flow == Flow::kIndirectCall) total += detail::kPushLongSize;  // As a push and a jump.
  }
  return total;
}

Status check_call_is_last(CodeSpan code, const Instruction& insn, std::uintptr_t run_end) {
  if (!calls_out(insn) || insn.end() >= run_end) return {};
  return fail(ErrorCode::kCannotRelocate, insn.address,
              name(code, insn) + " is a call before the last instruction of a run that ends at " + at(run_end) +
                  ": a thread returning from it would land inside the run");
}

}  // namespace punch::disasm
