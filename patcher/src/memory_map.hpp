// The process's mappings, parsed once from /proc/self/maps, for the write policy.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <punch/result.hpp>

namespace punch::patcher::live {

//! One line of /proc/self/maps.
struct Mapping {
  std::uintptr_t start = 0;
  std::uintptr_t end = 0;
  bool readable = false;
  bool executable = false;
  bool shared = false;  //!< 's' in the flags: MAP_SHARED.
  std::string name;     //!< The path or [heap], [stack], ... (may be empty).
};

//! A snapshot of /proc/self/maps, sorted by address.
class MemoryMap {
 public:
  //! Reads /proc/self/maps once.
  static Result<MemoryMap> read();

  //! The mappings that cover [address, address+size), in order, or kNotMapped
  //! naming the first address no mapping covers.
  Result<std::vector<const Mapping*>> covering(std::uintptr_t address, std::size_t size) const;

 private:
  std::vector<Mapping> mappings_;
};

}  // namespace punch::patcher::live
