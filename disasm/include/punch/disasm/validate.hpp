// punch::disasm validation — is a patch safe against the code as it stands?
// (Branches into the patched ranges: branch_scan.hpp.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include <punch/disasm/instruction.hpp>
#include <punch/result.hpp>

namespace punch::disasm {

//! Confirms [start, end) starts and ends on instruction boundaries of `code`,
//! decoding from code.address, which the caller knows is a boundary (e.g. a
//! function entry). The error names the offending address and the instruction
//! that straddles it. Returns the instructions that make up [start, end).
Result<std::vector<Instruction>> check_boundaries(CodeSpan code, std::uintptr_t start, std::uintptr_t end);

//! Confirms `replacement` (to live at replacement.address) decodes to whole,
//! valid instructions ending exactly at its end. NOP padding is checked like any code.
Result<std::vector<Instruction>> check_replacement(CodeSpan replacement);

//! The extent of the function that holds an address. disasm never looks it
//! up (that reads memory and files): runtime::function_containing finds it
//! from symbols or unwind tables (kSymbol), or the caller knows it (kCaller).
//! kBoundedScan marks punch's own last resort, the site alone (only with
//! TransactionOptions::allow_unprovable). An extent a caller hands punch
//! (Site::function, HookOptions::function) is always scanned in full,
//! whatever its source says: a caller cannot switch checks off through it.
struct FunctionExtent {
  std::uintptr_t start = 0;
  std::uintptr_t end = 0;
  enum class Source { kSymbol, kCaller, kBoundedScan } source = Source::kSymbol;
};

}  // namespace punch::disasm
