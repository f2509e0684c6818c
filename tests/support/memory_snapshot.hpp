// Compare memory byte for byte before and after an operation that must not change it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace punch::test {

//! A copy of [address, address+size) taken at construction (the range must be readable).
class MemorySnapshot {
 public:
  MemorySnapshot(std::uintptr_t address, std::size_t size);
  MemorySnapshot(const void* address, std::size_t size)
      : MemorySnapshot(reinterpret_cast<std::uintptr_t>(address), size) {}

  //! Empty when memory still holds the snapshot; else the first differing offsets, e.g. "+0x3: 90 -> cc".
  std::string differences() const;
  bool unchanged() const { return differences().empty(); }

  std::uintptr_t address() const { return address_; }
  const std::vector<std::uint8_t>& bytes() const { return bytes_; }

 private:
  std::uintptr_t address_;
  std::vector<std::uint8_t> bytes_;
};

}  // namespace punch::test
