// punch::runtime maps — the process's mappings, as /proc/self/maps lists them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <punch/result.hpp>

namespace punch::runtime {

//! One line of /proc/self/maps.
struct Mapping {
  std::uintptr_t start = 0;  //!< First byte.
  std::uintptr_t end = 0;    //!< One past the last byte.
  bool readable = false;
  bool writable = false;
  bool executable = false;
  bool shared = false;       //!< 's' (MAP_SHARED) rather than 'p'.
  std::uint64_t offset = 0;  //!< File offset of `start`.
  std::uint64_t device = 0;  //!< major << 32 | minor.
  std::uint64_t inode = 0;   //!< 0 for anonymous memory.
  std::string path;          //!< File, "[stack]", "[heap]", "/memfd:name (deleted)", or empty.

  bool contains(std::uintptr_t a) const noexcept { return a >= start && a < end; }
};

//! Every mapping of the process, in address order. kIoError when /proc/self/maps cannot be read.
Result<std::vector<Mapping>> read_mappings();

//! The mapping holding `address`, or std::nullopt (also when /proc/self/maps cannot be read).
std::optional<Mapping> find_mapping(std::uintptr_t address);

}  // namespace punch::runtime
