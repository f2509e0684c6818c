// The three ways a CodeWriter gets bytes into code that is never writable
// (WriteMethod). Each is one attempt: the bytes written (possibly fewer than
// asked), or -errno; an error that is no errno (a range outside the writer's
// memory, a protection that could not be restored) goes to `error`. The
// writer retries, injects faults and reports around them (code_writer.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include <punch/result.hpp>
#include <punch/runtime/code_writer.hpp>

namespace punch::runtime::detail {

//! Memory a writer mapped: its R+X view, and under dual-map the writable view
//! of the same pages.
struct WriterRegion {
  CodeRegion rx;
  std::uintptr_t rw = 0;  //!< dual-map only.
};

//! "0x7f... (16 bytes)", as the writer's messages name a range.
inline std::string range_text(std::uintptr_t address, std::size_t size) {
  return at(address) + " (" + std::to_string(size) + " bytes)";
}

//! proc-mem: one pwrite on /proc/self/mem, which the kernel performs with
//! FOLL_FORCE (private mappings only). Takes no lock.
long write_by_proc_mem(std::uintptr_t address, std::span<const std::uint8_t> bytes, std::optional<Error>& error);

//! dual-map: a memcpy into the writable view of the region that holds the
//! whole range; only memory this writer mapped. The caller holds the writer's lock.
long write_by_dual_map(std::span<const WriterRegion> regions, std::uintptr_t address,
                       std::span<const std::uint8_t> bytes, std::optional<Error>& error);

//! mprotect: the pages made read+write (never executable at once), the bytes
//! copied, each page's protection restored; refused under MDWE, which would
//! not let code become executable again. The caller holds the writer's lock
//! (two writers toggling one page would race).
long write_by_mprotect(std::span<const WriterRegion> regions, std::uintptr_t address,
                       std::span<const std::uint8_t> bytes, std::optional<Error>& error);

//! dual-map's memory: a memfd mapped twice, R+X within `window` and R+W
//! anywhere, filled with int3 through the writable view.
Result<WriterRegion> map_dual_region(std::size_t size, AddressWindow window);

}  // namespace punch::runtime::detail
