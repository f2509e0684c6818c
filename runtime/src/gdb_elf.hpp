// The in-memory ELF object gdb's JIT interface reads for a batch of JIT code.
//
// gdb opens each registered object with BFD as if it were a file on disk and
// adds it like a shared library: its symbols name the JIT functions in `bt`,
// and its .eh_frame lets gdb unwind through them to the C++ callers. The code
// itself is not in the object: .text is SHT_NOBITS at the code's real address
// (gdb reads the bytes from the process), so the object is small.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace punch::runtime::detail {

struct GdbSymbol {
  std::uintptr_t start = 0;
  std::size_t size = 0;
  std::string_view name;
};

//! An ELF64 relocatable object (ET_REL, x86-64): section .text (NOBITS) at
//! [text_start, text_start + text_size), one STT_FUNC symbol per function
//! (each inside the text range), and `eh_frame` (absolute pointers, as
//! write_eh_frame makes them; may be empty) as .eh_frame.
std::vector<std::uint8_t> build_gdb_object(std::uintptr_t text_start, std::size_t text_size,
                                           std::span<const GdbSymbol> symbols, std::span<const std::uint8_t> eh_frame);

}  // namespace punch::runtime::detail
