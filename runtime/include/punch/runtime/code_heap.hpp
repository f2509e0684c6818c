// punch::runtime::CodeHeap — R+X arenas that hand out code space.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include <punch/result.hpp>
#include <punch/runtime/code_range.hpp>
#include <punch/runtime/code_writer.hpp>

namespace punch::runtime {

//! Heap statistics, in bytes.
struct HeapStats {
  std::size_t mapped = 0;       //!< Bytes of code memory mapped in all arenas.
  std::size_t used = 0;         //!< Bytes handed out and not freed (including alignment).
  std::size_t free = 0;         //!< mapped - used.
  std::size_t fragments = 0;    //!< Number of free blocks across arenas.
  std::size_t arenas = 0;       //!< Number of arenas.
  std::size_t allocations = 0;  //!< Live allocations.
};

//! A thread-safe allocator of executable memory, on top of a CodeWriter.
//!
//! Arenas are R+X MAP_PRIVATE (under dual-map: memfd pairs). Fresh and freed
//! space is filled with int3. Space that was freed is synced (every thread
//! serialized) before it is handed out again, so no thread runs stale code there.
class CodeHeap {
 public:
  //! A heap writing through `writer`, mapping arenas of at least `arena_size` bytes.
  explicit CodeHeap(CodeWriter& writer, std::size_t arena_size = 1u << 20);
  ~CodeHeap();  //!< Unmaps every arena. Code in it must no longer run.
  CodeHeap(const CodeHeap&) = delete;
  CodeHeap& operator=(const CodeHeap&) = delete;

  //! The process-wide heap on CodeWriter::global().
  static Result<CodeHeap*> global();

  //! Allocates `size` bytes aligned to `align` (a power of two, at most a page),
  //! lying entirely within `window` (see AddressWindow::rel32_reach).
  //! Errors: zero or overflowing size, bad alignment, empty window, no memory in reach.
  Result<std::uintptr_t> allocate(std::size_t size, std::size_t align = 16, AddressWindow window = {});

  //! Allocates consecutive blocks, one per size, each aligned to `align`, in
  //! one arena (so one write can fill them all); each is freed on its own.
  //! Same errors as allocate; on error nothing is allocated.
  Result<std::vector<std::uintptr_t>> allocate_run(std::span<const std::size_t> sizes, std::size_t align = 16,
                                                   AddressWindow window = {});

  //! Makes sure `size` bytes aligned to `align` could be allocated within
  //! `window` now, without allocating them: an arena with room there is
  //! found, or one is mapped (and kept, like every arena). For a caller that
  //! must know memory in reach exists before it commits to needing it. Same
  //! errors as allocate.
  Status reserve_room(std::size_t size, std::size_t align, AddressWindow window);

  //! What reserve_room would answer now, touching nothing: an arena has room
  //! within `window`, or the address space there has a free range an arena
  //! could be mapped into. For checks that must leave the process as it was
  //! (Transaction::validate); the answer can be stale a moment later.
  Status has_room(std::size_t size, std::size_t align, AddressWindow window);

  //! Frees an allocation. Freeing an address this heap did not hand out, or a
  //! double free, is a kNotOwned error and changes nothing. Code registered
  //! in the space (see code_registry.hpp) is unregistered from every tool
  //! first, as it is when the heap is destroyed.
  Status free(std::uintptr_t address);

  //! Frees several allocations, filling each contiguous run of them with int3
  //! in one write. All or nothing: an address that is not a live allocation
  //! (or is listed twice) is an error and nothing is freed.
  Status free_batch(std::span<const std::uintptr_t> addresses);

  //! Whether [address, address+size) lies inside one live allocation of this heap.
  bool owns(std::uintptr_t address, std::size_t size = 1) const;

  //! The live allocation that holds `address` (anywhere inside it, padding
  //! included), as [begin, end); kNotOwned naming the address when none does.
  //! One lock and one O(log n) lookup.
  Result<CodeRange> allocation_holding(std::uintptr_t address) const;

  //! allocation_holding for many addresses under one lock: for each address,
  //! the live allocation holding it, or an empty range {0, 0} when none does.
  //! Ascending addresses are cheapest: one in the same allocation as the
  //! address before it costs no lookup.
  std::vector<CodeRange> allocations_holding(std::span<const std::uintptr_t> addresses) const;

  //! Size of the live allocation starting at `address`, or kNotOwned.
  Result<std::size_t> allocation_size(std::uintptr_t address) const;

  HeapStats stats() const;
  CodeWriter& writer() const noexcept;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace punch::runtime
