// A FrameDescription read into rows: where the CFA and the saved registers are at each offset.
//
// One interpreter of the steps serves both outputs: the .eh_frame bytes
// libgcc and gdb read (eh_frame_writer) and the table walk_stack reads in a
// signal handler (unwind_table).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include <punch/result.hpp>
#include <punch/runtime/frame_description.hpp>

namespace punch::runtime::detail {

//! The frame from `offset` up to the next row's offset.
struct FrameRow {
  std::uint32_t offset = 0;
  bool cfa_on_rbp = false;  //!< CFA = rbp + cfa_offset; else rsp + cfa_offset.
  std::int32_t cfa_offset = 8;
  //! Per asmjit gp id: 0 when the register holds the caller's value, else k
  //! for "saved at CFA - 8k" (k >= 2: the return address is at CFA - 8).
  std::array<std::uint8_t, 16> saved{};

  bool operator==(const FrameRow&) const = default;
};

//! The rows of a function of `size` bytes, the first at offset 0, one per
//! offset where the frame changes. kInvalidArgument naming the step and the
//! reason for steps out of order or past the end, a pop below the return
//! address, rsp pushed or popped, or a restore without a remember.
Result<std::vector<FrameRow>> frame_rows(const FrameDescription& description, std::size_t size);

}  // namespace punch::runtime::detail
