// Deciding what a hook replaces at a function's entry, and refusing what cannot be proven safe.
#include "hook_planner.hpp"

#include "branch_index.hpp"
#include "function_extent.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <cstring>
#include <string>

#include <punch/disasm/branch_scan.hpp>
#include <punch/disasm/instruction.hpp>
#include <punch/disasm/instruction_facts.hpp>
#include <punch/disasm/relocate.hpp>
#include <punch/disasm/validate.hpp>
#include <punch/runtime/safe_read.hpp>

namespace punch::patcher::detail {
namespace {

// Enough bytes to decode the longest stolen run (16 bytes) plus one maximal instruction.
constexpr std::size_t kEntryWindow = 64;

struct Code {
  std::uintptr_t address = 0;
  std::vector<std::uint8_t> bytes;
  disasm::CodeSpan span() const { return {address, bytes}; }
};

// Reads [start, end) where only the first `required` bytes must be readable.
Result<Code> read_code(std::uintptr_t start, std::size_t size, std::size_t required) {
  Code code{start, std::vector<std::uint8_t>(size)};
  auto got = runtime::safe_read(start, code.bytes);
  if (!got) return tl::unexpected<Error>(std::move(got).error());
  if (*got < required) return fail(ErrorCode::kNotMapped, at(start + *got) + ": function bytes end in unmapped memory");
  code.bytes.resize(*got);
  return code;
}

// Whether a function (symbol or FDE) starts exactly at `address` (a new function, not padding).
bool symbol_starts_at(std::uintptr_t address) { return runtime::function_starts_at(address); }

// Whether `address` is the start of the profiling hook __fentry__ or mcount.
bool is_profiling_hook(std::uintptr_t address) {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(address), &info) == 0 || info.dli_sname == nullptr) return false;
  const std::string name = info.dli_sname;
  return reinterpret_cast<std::uintptr_t>(info.dli_saddr) == address && (name == "__fentry__" || name == "mcount");
}

// The pointer held in a GOT slot, or 0.
std::uintptr_t slot_value(std::uintptr_t slot) {
  auto bytes = runtime::safe_read_exact(slot, sizeof(std::uintptr_t));
  if (!bytes) return 0;
  std::uintptr_t value = 0;
  std::memcpy(&value, bytes->data(), sizeof value);
  return value;
}

// Where a PLT stub at `address` jumps (`[endbr64;] [bnd] jmp [rip+slot]`), as its GOT slot holds it now; else 0.
std::uintptr_t plt_destination(std::uintptr_t address) {
  auto bytes = runtime::safe_read_exact(address, 16);
  if (!bytes) return 0;
  const disasm::CodeSpan stub{address, *bytes};
  auto insn = disasm::decode(stub, address);
  if (insn && insn->is_endbr64) insn = disasm::decode(stub, insn->end());
  if (!insn || insn->flow != disasm::Flow::kIndirectJump || !insn->has_memory_target) return 0;
  return slot_value(insn->memory_target);
}

// Whether `insn` is the -mfentry profiling call, a replaceable pad. Its forms:
// `call __fentry__` (rel32, maybe through a PLT stub: clang, or gcc without PIE)
// and `call [rip+GOT slot]` (gcc -fPIE/-fPIC). A PLT slot not yet bound
// (lazy binding, the function never called) is not recognized.
bool is_fentry_call(const disasm::Instruction& insn) {
  if (insn.flow == disasm::Flow::kCall && insn.has_branch_target && insn.length == 5)
    return is_profiling_hook(insn.branch_target) || is_profiling_hook(plt_destination(insn.branch_target));
  if (insn.flow == disasm::Flow::kIndirectCall && insn.has_memory_target && insn.length == 6)
    return is_profiling_hook(slot_value(insn.memory_target));
  return false;
}

// Decodes the instruction at `address`, skipping one leading endbr64. Sets plan.entry/endbr64.
Status find_entry(const Code& code, EntryPlan& plan) {
  auto first = disasm::decode(code.span(), plan.target);
  if (!first) return tl::unexpected<Error>(std::move(first).error());
  plan.endbr64 = first->is_endbr64;
  plan.entry = plan.endbr64 ? first->end() : plan.target;
  return {};
}

// No branch from elsewhere in the object may land in the replaced bytes
// either: functions tail-jump into each other's bodies (glibc's __mempcpy_*
// ends in `jmp memmove+3`), which no scan of one function sees.
Status check_object_branches(const EntryPlan& plan, bool allow_unprovable) {
  return check_no_branch_into({plan.entry, plan.original}, allow_unprovable, at(plan.target),
                              "the bytes [" + at(plan.entry) + ", " + at(plan.resume()) + ") a hook would replace");
}

// A hook inside a function (a mid hook) must start on one of its
// instructions, as decoding from the function's start finds them.
Status check_instruction_boundary(const Code& code, const EntryPlan& plan) {
  auto first = disasm::decode(code.span(), plan.target);
  if (!first) return tl::unexpected<Error>(std::move(first).error());
  auto boundaries = disasm::check_boundaries(code.span(), plan.target, first->end());
  if (!boundaries)
    return fail(ErrorCode::kNotBoundary, at(plan.target) + ": not an instruction boundary of the function [" +
                                             at(plan.extent.start) + ", " + at(plan.extent.end) +
                                             "): " + boundaries.error().message);
  return {};
}

}  // namespace

Result<EntryPlan> plan_patchable_entry(std::uintptr_t target) {
  EntryPlan plan;
  plan.target = target;
  plan.kind = HookEntryKind::kPatchableEntry;
  auto code = read_code(target, kEntryWindow, 1);
  if (!code) return tl::unexpected<Error>(std::move(code).error());
  PUNCH_TRY(find_entry(*code, plan));

  // A run of nops (any width) totalling at least 5 bytes, or the -mfentry call.
  std::uintptr_t a = plan.entry;
  while (a - plan.entry < kRel32JumpSize) {
    auto insn = disasm::decode(code->span(), a);
    if (!insn) return tl::unexpected<Error>(std::move(insn).error());
    if (!disasm::is_nop(*insn) && !(a == plan.entry && is_fentry_call(*insn)))
      return fail(ErrorCode::kUnprovable, at(plan.entry) + ": no patchable entry pad (found `" +
                                              disasm::format(code->span(), a) + "` at " + at(a) + ")");
    plan.instructions.push_back(*insn);
    a = insn->end();
  }
  const auto begin = code->bytes.begin() + static_cast<std::ptrdiff_t>(plan.entry - target);
  plan.original.assign(begin, begin + static_cast<std::ptrdiff_t>(a - plan.entry));
  plan.extent = {plan.entry, a, disasm::FunctionExtent::Source::kCaller};
  PUNCH_TRY(check_object_branches(plan, false));
  return plan;
}

Result<EntryPlan> plan_stolen_entry(std::uintptr_t target, std::size_t min_bytes, const StealPolicy& policy) {
  EntryPlan plan;
  plan.target = target;
  plan.kind = min_bytes > kRel32JumpSize ? HookEntryKind::kStolenAbsolute : HookEntryKind::kStolenRel32;

  // The function's extent: from the caller, else its symbols or unwind tables; without it no branch scan is possible.
  if (policy.function) {
    plan.extent = *policy.function;
  } else {
    auto extent = function_extent(target);
    if (!extent)
      return fail(
          ErrorCode::kUnprovable,
          extent.error().message + "; cannot prove no branch lands in the stolen bytes (pass HookOptions::function)");
    plan.extent = *extent;
  }
  if (target < plan.extent.start || target >= plan.extent.end)
    return fail(ErrorCode::kInvalidArgument, at(target) + ": outside the given function extent [" +
                                                 at(plan.extent.start) + ", " + at(plan.extent.end) + ")");

  const std::size_t body = plan.extent.end - plan.extent.start;
  auto code = read_code(plan.extent.start, body + kEntryWindow, body);
  if (!code) return tl::unexpected<Error>(std::move(code).error());
  PUNCH_TRY(find_entry(*code, plan));
  if (target != plan.extent.start) PUNCH_TRY(check_instruction_boundary(*code, plan));

  // Steal whole instructions until the jump fits. Bytes after an
  // unconditional jump or return that lie inside the function's extent are
  // still its code (the branch scan covers them); past the extent's end,
  // after control stopped falling through, only padding may be stolen.
  std::uintptr_t a = plan.entry;
  std::uintptr_t function_ends_at = 0;  // Set once control cannot fall through any more.
  while (a - plan.entry < min_bytes) {
    auto insn = disasm::decode(code->span(), a);
    if (!insn) return tl::unexpected<Error>(std::move(insn).error());
    if (function_ends_at != 0 && a >= plan.extent.end) {
      // Past the function's last instruction only padding up to the next symbol may be stolen.
      if (!insn->is_padding || symbol_starts_at(a))
        return fail(ErrorCode::kUnprovable,
                    at(target) + ": function ends at " + at(function_ends_at) + ", shorter than the " +
                        std::to_string(min_bytes) + "-byte jump, and `" + disasm::format(code->span(), a) + "` at " +
                        at(a) + (insn->is_padding ? " starts another symbol" : " is not padding"));
    } else if (auto last = disasm::check_call_is_last(code->span(), *insn, plan.entry + min_bytes); !last) {
      return fail(std::move(last).error().with_context(at(target) + ": stolen bytes"));
    } else if (!disasm::falls_through(*insn)) {
      function_ends_at = insn->end();
    }
    if (insn->has_memory_target) plan.data_targets.push_back(insn->memory_target);
    plan.instructions.push_back(*insn);
    a = insn->end();
  }
  plan.ends_in_call = disasm::calls_out(plan.instructions.back());
  if (a > code->address + code->bytes.size())
    return fail(ErrorCode::kNotMapped, at(a) + ": stolen bytes run into unmapped memory");
  const auto begin = code->bytes.begin() + static_cast<std::ptrdiff_t>(plan.entry - code->address);
  plan.original.assign(begin, begin + static_cast<std::ptrdiff_t>(a - plan.entry));

  // No branch from the rest of the function may land inside the stolen bytes.
  const std::uintptr_t scan_end = std::max(plan.extent.end, a);
  disasm::CodeSpan function{code->address, std::span<const std::uint8_t>(code->bytes).first(scan_end - code->address)};
  PUNCH_TRY_ASSIGN(const disasm::BranchScan scan, disasm::scan_branches(function, plan.entry, a));
  if (!scan.branches_into.empty())
    return fail(ErrorCode::kBranchInto, at(scan.branches_into.front().branch) + ": `" +
                                            disasm::format(function, scan.branches_into.front().branch) +
                                            "` branches into the stolen bytes [" + at(plan.entry) + ", " + at(a) + ")");
  if (!policy.allow_unprovable && !scan.indirect_jumps.empty())
    return fail(ErrorCode::kUnprovable, at(scan.indirect_jumps.front()) + ": indirect jump `" +
                                            disasm::format(function, scan.indirect_jumps.front()) +
                                            "` in the function of " + at(target) +
                                            " may land in the stolen bytes (set allow_unprovable to accept)");
  if (!policy.allow_unprovable && !scan.complete)
    return fail(ErrorCode::kUnprovable, at(target) +
                                            ": the function's bytes do not all decode; cannot prove "
                                            "no branch lands in the stolen bytes");
  PUNCH_TRY(check_object_branches(plan, policy.allow_unprovable));
  return plan;
}

}  // namespace punch::patcher::detail
