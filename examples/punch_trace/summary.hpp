// The report punch_trace writes when the program exits.
#pragma once

#include <cstdint>
#include <deque>

#include "traced_function.hpp"

namespace punch_trace {

struct RunFacts {
  const char* program = "";  //!< program_invocation_short_name.
  std::int64_t pid = 0;
  std::uint64_t elapsed_ns = 0;     //!< From the constructor to the summary.
  double ns_per_tick = 0;           //!< The time stamp counter's rate over the same span.
  std::uint64_t toggle_ms = 0;      //!< 0: hooks installed once.
  std::uint64_t toggle_phases = 0;  //!< Remove-all and install-all phases run.
  bool hooking_finished = true;     //!< False when the program ended before the first install phase did.
  const char* out_path = nullptr;   //!< PUNCH_TRACE_OUT, or nullptr for stderr.
};

//! Formats the summary into a static buffer and writes it with raw system
//! calls to PUNCH_TRACE_OUT (appended, one write per process where it fits) or
//! to stderr. It calls no function that may be traced (no malloc, no stdio,
//! no libc write), so it is safe with every hook still in place.
void write_summary(const std::deque<TracedFunction>& functions, const RunFacts& facts) noexcept;

}  // namespace punch_trace
