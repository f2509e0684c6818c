// punch::disasm branch scan — can a branch of the code around a patch land inside it?
//
// A patch replaces byte ranges of some code (a hook's stolen bytes, a
// transaction's sites). A branch landing strictly inside a replaced range
// would land in the middle of the new bytes, so before a patch the code that
// holds the ranges (usually their function) is scanned, and one rule decides
// for every caller:
//
// - A direct branch landing strictly inside a range is found and named
//   (landing at the range's first byte is fine). A branch inside the same
//   range is not: it is replaced, or relocated along with the range.
// - An indirect jump may land on any instruction boundary, so one anywhere in
//   the scanned code means the ranges cannot be proven free of branch
//   targets. That holds for one inside a range too: a hook's trampoline and a
//   transaction's out-of-line copy still run it, and it may aim at a later
//   instruction of the range (a jump table's first case often follows its
//   `jmp`). Only an indirect jump that is its range's only instruction is
//   left out: no instruction boundary lies inside that range for it to reach.
//   An indirect jump through a slot in the scanned bytes themselves (`jmp
//   [rip+x]` reading the code's own bytes, as punch's absolute jumps do) is
//   not unknown: it goes where those bytes say, and is checked like a direct
//   branch (code changes only by a patch, which is checked itself).
// - A scan that stops at undecodable bytes proves nothing about what follows.
//
// Callers refuse a direct branch into a range always (kBranchInto), and
// indirect jumps or an incomplete scan (kUnprovable) unless the user set
// allow_unprovable. disasm reads no memory: it scans bytes or instructions
// the caller decoded from them.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include <punch/disasm/instruction.hpp>
#include <punch/result.hpp>

namespace punch::disasm {

//! A range a patch replaces: [start, end).
struct PatchRange {
  std::uintptr_t start = 0;
  std::uintptr_t end = 0;
};

//! A direct branch found landing strictly inside a range.
struct BranchInto {
  std::uintptr_t branch = 0;  //!< The branch instruction.
  std::uintptr_t target = 0;  //!< Where it lands.
  std::size_t range = 0;      //!< The range it lands in (index into the scanned ranges).
};

//! What a branch scan found, in address order.
struct BranchScan {
  std::vector<BranchInto> branches_into;       //!< Direct branches landing strictly inside a range.
  std::vector<std::uintptr_t> indirect_jumps;  //!< Indirect jumps that may land inside one (see above).
  bool complete = true;                        //!< false when the scan stopped at undecodable bytes.

  //! Whether indirect jumps or undecoded code leave the ranges unproven (kUnprovable unless allowed).
  bool unprovable() const noexcept { return !indirect_jumps.empty() || !complete; }
};

//! Scans `insns`, `code` decoded in address order from a known boundary
//! (instructions may be left out where they cannot branch: int3, ret, nop),
//! against `ranges`, sorted by address and disjoint. `complete`: whether
//! `insns` reach the end of `code` (the decode did not stop at undecodable
//! bytes). Each range must start and end on boundaries of `insns`
//! (check_boundaries).
BranchScan scan_branches(CodeSpan code, std::span<const Instruction> insns, std::span<const PatchRange> ranges,
                         bool complete);

//! scan_branches of one range [start, end) of `function` (its bytes, from its
//! entry), decoding it here: until its end or the first undecodable byte.
Result<BranchScan> scan_branches(CodeSpan function, std::uintptr_t start, std::uintptr_t end);

}  // namespace punch::disasm
