// The frame rows of registered JIT functions, for walk_stack in a signal handler.
//
// Readers take no lock and allocate nothing: they count themselves in, load
// the current snapshot (an immutable array sorted by address), binary-search
// it, copy the row out, and count themselves out. Writers (under a mutex)
// publish a new snapshot, then wait for the readers in flight to leave before
// freeing the old one and the rows of removed functions, so a reader never
// sees freed memory. A reader is a short, bounded search, and writers never
// run in a signal handler, so the wait cannot deadlock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "code_events.hpp"
#include "frame_rows.hpp"

namespace punch::runtime::detail {

struct UnwindTableEntry {
  std::uintptr_t start = 0;
  std::size_t size = 0;
  std::vector<FrameRow> rows;
};

//! Adds functions (their rows are moved in). Ranges must not overlap entries in the table.
void unwind_table_add(std::vector<UnwindTableEntry> entries);

//! Removes every function starting in one of the ranges; returns once no
//! reader can still see them.
void unwind_table_remove(std::span<const code_events::ReleasedCode> ranges);

//! The row in force at `pc` in a registered function, and the function's start.
//! Async-signal-safe. False when no registered function holds `pc`.
bool unwind_table_find(std::uintptr_t pc, FrameRow& row, std::uintptr_t& start) noexcept;

//! How many functions the table holds (for tests).
std::size_t unwind_table_size() noexcept;

}  // namespace punch::runtime::detail
