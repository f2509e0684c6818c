// The branch scan: which branches of the code around a patch may land inside it.
#include <punch/disasm/branch_scan.hpp>

#include <algorithm>
#include <cstring>
#include <optional>

namespace punch::disasm {
namespace {

// Where a direct branch, or an indirect jump through a slot in `code`'s own bytes, goes.
std::optional<std::uintptr_t> known_target(CodeSpan code, const Instruction& insn) {
  if (insn.has_branch_target) return insn.branch_target;
  if (insn.flow != Flow::kIndirectJump || !insn.has_memory_target || insn.memory_target < code.address ||
      insn.memory_target > code.end() || code.end() - insn.memory_target < sizeof(std::uintptr_t))
    return std::nullopt;  // (A slot past the end would make the subtraction wrap: fuzz_transaction read out of bounds.)
  std::uintptr_t slot = 0;
  std::memcpy(&slot, code.bytes.data() + (insn.memory_target - code.address), sizeof slot);
  return slot;
}

}  // namespace

BranchScan scan_branches(CodeSpan code, std::span<const Instruction> insns, std::span<const PatchRange> ranges,
                         bool complete) {
  BranchScan scan;
  scan.complete = complete;
  // The range holding `a`, or ranges.size().
  const auto holding = [&](std::uintptr_t a) {
    auto it = std::upper_bound(ranges.begin(), ranges.end(), a,
                               [](std::uintptr_t x, const PatchRange& r) { return x < r.start; });
    if (it == ranges.begin() || a >= std::prev(it)->end) return ranges.size();
    return static_cast<std::size_t>(std::prev(it) - ranges.begin());
  };
  std::size_t next = 0;  // The first range that does not end at or before the instruction: both run by address.
  for (const Instruction& insn : insns) {
    while (next < ranges.size() && ranges[next].end <= insn.address) ++next;
    const bool in_range = next < ranges.size() && ranges[next].start < insn.end();
    const std::size_t home = in_range ? next : ranges.size();
    const std::optional<std::uintptr_t> target = known_target(code, insn);
    if (!target) {
      if (insn.flow == Flow::kIndirectJump &&
          !(in_range && insn.address == ranges[home].start && insn.end() == ranges[home].end))
        scan.indirect_jumps.push_back(insn.address);
      continue;
    }
    const std::size_t into = holding(*target);
    if (into != ranges.size() && into != home && *target != ranges[into].start)
      scan.branches_into.push_back({insn.address, *target, into});
  }
  return scan;
}

Result<BranchScan> scan_branches(CodeSpan function, std::uintptr_t start, std::uintptr_t end) {
  if (function.bytes.empty()) return fail(ErrorCode::kInvalidArgument, start, "no function bytes to scan (empty span)");
  if (start >= end || start < function.address || end > function.end())
    return fail(ErrorCode::kInvalidArgument, start,
                "range [" + at(start) + ", " + at(end) + ") is empty or not inside the function [" +
                    at(function.address) + ", " + at(function.end()) + ")");
  std::vector<Instruction> insns;
  insns.reserve(function.bytes.size() / 4);  // About one instruction per four bytes of compiled code.
  bool complete = true;
  for (std::uintptr_t a = function.address; a < function.end();) {
    auto insn = decode(function, a);
    if (!insn) {
      complete = false;  // Data or junk after the code: what follows is unknown.
      break;
    }
    insns.push_back(*insn);
    a = insn->end();
  }
  const PatchRange range{start, end};
  return scan_branches(function, insns, std::span(&range, 1), complete);
}

}  // namespace punch::disasm
