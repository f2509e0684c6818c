// punch::patcher branch index — does any direct branch of a loaded object land inside a range?
//
// A hook's stolen bytes and a transaction's site are safe only if no
// branch lands strictly inside them, and the function that holds them is not
// the only code that can branch there: glibc's `__mempcpy_*` ends in `jmp
// memmove+3`, and any compiler may tail-jump into a neighbour's body. So the
// first question about an object sweeps its whole executable code once
// (disasm::sweep_direct_branches) and keeps every direct branch that lands in
// it, sorted by target; every later question is a binary search.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <punch/disasm/instruction.hpp>
#include <punch/result.hpp>

namespace punch::patcher::detail {

//! A direct branch of a loaded object that lands inside a range from outside it.
struct ForeignBranch {
  std::uintptr_t source = 0;     //!< The branch instruction.
  std::uintptr_t target = 0;     //!< Where it lands.
  std::string object;            //!< The object's path ("" for the main program).
  std::uintptr_t load_bias = 0;  //!< The object's load address (its addresses are bias + ELF address).
};

//! Every direct branch anywhere in the executable code of the loaded object
//! that holds `begin` that lands strictly inside (begin, end) — landing at
//! `begin` is fine — and does not lie in [begin, end) itself (a branch there
//! is replaced or relocated along with the range); by target. Empty when none
//! does, or when no loaded object holds `begin` (JIT code: only the caller's
//! own checks apply). An error when the object's code cannot be read, so
//! nothing can be proven. The sweep may count data as branches (a branch
//! found here may be none), and just after data it may be out of step with
//! the code for a few instructions (docs/design.md: measured, nothing missed).
Result<std::vector<ForeignBranch>> find_branches_into(std::uintptr_t begin, std::uintptr_t end);

//! "`jmp 0x7f...` at 0x7f... (libc.so.6+0xa2d56) lands at 0x7f... (libc.so.6+0xa2d73)": for refusals.
std::string describe(const ForeignBranch& branch);

//! find_branches_into as a check of the bytes `now` (the instructions there
//! at present, on their boundaries). kBranchInto naming the first branch that
//! lands where code can: an instruction's first byte, or past some of its
//! prefixes (glibc's `je 1f; lock; 1: cmpxchg`). A branch landing anywhere
//! else inside an instruction (its opcode, operands, immediate) is most
//! likely data the sweep decoded as a branch: kUnprovable, accepted with
//! allow_unprovable, as is an object whose code cannot be read. `subject`
//! begins the message, `range` names the bytes.
Status check_no_branch_into(disasm::CodeSpan now, bool allow_unprovable, const std::string& subject,
                            const std::string& range);

//! What the index holds now (tests and benchmarks).
struct BranchIndexStats {
  std::size_t objects = 0;   //!< Objects indexed since the last invalidation.
  std::size_t branches = 0;  //!< Direct branches kept (landing inside their object's code).
  std::size_t bytes = 0;     //!< Executable bytes swept.
};
BranchIndexStats branch_index_stats();

//! Drops every object's index, so the next question sweeps again (benchmarks).
void forget_branch_indexes();

}  // namespace punch::patcher::detail
