// punch::runtime::safe_read — read memory at an address a caller hands us, never faulting.
//
// Reads go through /proc/self/mem (pread), which never raises SIGSEGV: an
// unmapped address gives EIO or a short read. Where /proc/self/mem is absent,
// process_vm_readv on our own pid gives the same guarantee.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include <punch/result.hpp>

namespace punch::runtime {

//! Reads up to out.size() bytes at `address`. Returns how many leading bytes
//! were readable (the readable prefix of a partly mapped range). Nothing
//! readable at all is a kNotMapped error naming the address.
Result<std::size_t> safe_read(std::uintptr_t address, std::span<std::uint8_t> out);

//! The same read for signal handlers: no allocation, no lock, no error value;
//! returns the length of the readable prefix (0: nothing readable, or a range
//! that overflows).
std::size_t safe_read_some(std::uintptr_t address, std::span<std::uint8_t> out) noexcept;

//! Reads exactly `size` bytes at `address`, or fails naming the first unreadable address.
Result<std::vector<std::uint8_t>> safe_read_exact(std::uintptr_t address, std::size_t size);

}  // namespace punch::runtime
