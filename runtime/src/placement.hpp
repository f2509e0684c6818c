// Mapping memory inside an address window (for rel32 reach).
#pragma once

#include <cstddef>
#include <cstdint>

#include <punch/result.hpp>
#include <punch/runtime/code_writer.hpp>

namespace punch::runtime::detail {

//! The page size.
std::size_t page_size() noexcept;

//! mmap(`size` bytes, `prot`, `flags`, `fd`, offset 0) lying entirely inside
//! `window`. An unbounded window lets the kernel choose; otherwise a free gap
//! is found in /proc/self/maps, as close to the window's middle as possible,
//! and claimed with MAP_FIXED_NOREPLACE (retried if another thread took it).
Result<std::uintptr_t> map_in_window(std::size_t size, int prot, int flags, int fd, AddressWindow window);

//! Whether map_in_window(size, ..., window) would find a free range now,
//! mapping nothing (the answer may be stale a moment later).
Status has_gap_in_window(std::size_t size, AddressWindow window);

}  // namespace punch::runtime::detail
