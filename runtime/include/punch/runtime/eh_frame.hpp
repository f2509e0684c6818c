// punch::runtime eh_frame — a function's bounds from the unwind tables.
//
// Every function gcc and clang compile has an FDE in .eh_frame, even in a
// stripped binary, and PT_GNU_EH_FRAME points at .eh_frame_hdr: a table of
// (function start, FDE) pairs sorted by start, for a binary search. The FDE
// gives the function's start and length. The parser reads only the bytes it
// is handed and refuses anything malformed: the tables may be corrupt.
#pragma once

#include <cstdint>
#include <span>

#include <punch/result.hpp>

namespace punch::runtime {

//! Where the unwind tables of one object are: `bytes` is the readable memory
//! (or a test's copy of it) that holds .eh_frame_hdr and .eh_frame, and
//! `address` is the run-time address of bytes[0].
struct UnwindTables {
  std::span<const std::uint8_t> bytes;
  std::uintptr_t address = 0;
  std::uintptr_t eh_frame_hdr = 0;  //!< Run-time address of .eh_frame_hdr (inside `bytes`).
};

//! [start, end) of the code one FDE describes.
struct FdeRange {
  std::uintptr_t start = 0;
  std::uintptr_t end = 0;
};

//! The FDE covering `pc`, found through .eh_frame_hdr's search table (version
//! 1, table encoding DW_EH_PE_datarel|sdata4), its bounds read from the FDE
//! with the pointer encoding of its CIE's 'R' augmentation. kUnprovable when no
//! FDE covers `pc`; kDecodeFailed (naming the offset and the reason) for
//! malformed or unsupported tables. Never reads outside `tables.bytes`.
Result<FdeRange> find_fde(const UnwindTables& tables, std::uintptr_t pc);

}  // namespace punch::runtime
