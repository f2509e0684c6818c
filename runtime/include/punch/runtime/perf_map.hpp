// punch::runtime perf map — names of JIT code for `perf report`.
//
// perf reads /tmp/perf-<pid>.map ("START SIZE name" lines, hex) to name
// samples in anonymous executable memory. When on, every piece of code
// registered (Jit functions, punch's trampolines and copies, register_code)
// is appended as it is added, and the code already registered when it is
// turned on is written first. On when the program starts with
// PUNCH_PERF_MAP=1 set, or after enable_perf_map().
//
// The map has no way to say code went away: an address reused by newer code
// has two lines and perf picks one. Use jitdump (jitdump.hpp) when code is
// released and reused while perf records.
//
// After fork() the child writes its own /tmp/perf-<child pid>.map, starting
// with every piece of code it inherited.
#pragma once

#include <cstddef>
#include <string>

#include <punch/result.hpp>

namespace punch::runtime {

//! Opens (appending) /tmp/perf-<pid>.map and writes every registered piece of
//! code to it. kIoError naming the path when it cannot be opened. Enabling
//! twice is fine.
Status enable_perf_map();

//! Stops writing the map (the file stays: perf reads it after the run).
void disable_perf_map();

//! The map this process writes, or "" when the perf map is off.
std::string perf_map_path();

//! Lines this process has written to its map.
std::size_t perf_map_entries();

}  // namespace punch::runtime
