// punch::runtime maps — the process's mappings, as /proc/self/maps lists them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
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

//! How query_mapping finds a mapping.
enum class MapsQuery {
  kAuto,   //!< The ioctl where the kernel has it, else a parse (decided once per process).
  kIoctl,  //!< PROCMAP_QUERY only (Linux 6.11+); kUnsupported where the kernel lacks it.
  kParse,  //!< Read and parse the whole of /proc/self/maps.
};

//! The mapping holding `address`, without reading the whole file: one
//! PROCMAP_QUERY ioctl on a /proc/self/maps descriptor kept open (reopened
//! after fork), or a parse of the file where the ioctl is unavailable
//! (ENOTTY/EINVAL). kNotMapped naming the address when no mapping holds it;
//! kIoError when /proc/self/maps cannot be read.
Result<Mapping> query_mapping(std::uintptr_t address, MapsQuery how = MapsQuery::kAuto);

//! Parses the text of a /proc/<pid>/maps file (lines that do not parse are
//! skipped). The fallback of query_mapping; public so tests can feed it text.
std::vector<Mapping> parse_mappings(std::string_view text);

}  // namespace punch::runtime
