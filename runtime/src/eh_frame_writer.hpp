// .eh_frame bytes for JIT functions, as libgcc's __register_frame and gdb read them.
//
// One CIE (version 1, augmentation "zR" with absolute 8-byte pointers, so the
// bytes mean the same wherever they are copied: into a registration block or
// into the in-memory ELF object gdb reads), one FDE per function, then the
// 4-byte zero terminator __register_frame's walk stops at.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "frame_rows.hpp"

namespace punch::runtime::detail {

struct FunctionFrame {
  std::uintptr_t start = 0;
  std::size_t size = 0;
  std::span<const FrameRow> rows;  //!< From frame_rows(); the first is at offset 0.
};

//! CIE, one FDE per function (in order), terminator. Records are 8-byte aligned.
std::vector<std::uint8_t> write_eh_frame(std::span<const FunctionFrame> functions);

//! The DWARF register number of an asmjit x86 gp id (0..15).
std::uint8_t dwarf_register(std::uint8_t gp_id) noexcept;

}  // namespace punch::runtime::detail
