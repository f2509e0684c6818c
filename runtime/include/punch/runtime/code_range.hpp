// punch::runtime::CodeRange — an address range of code.
#pragma once

#include <cstdint>

namespace punch::runtime {

//! An address range [begin, end).
struct CodeRange {
  std::uintptr_t begin = 0;
  std::uintptr_t end = 0;
  bool contains(std::uintptr_t address) const noexcept { return address >= begin && address < end; }
};

}  // namespace punch::runtime
