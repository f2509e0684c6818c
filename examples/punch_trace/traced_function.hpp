// One function punch_trace was asked to trace, and everything it reports about it.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include <punch/patcher/hook.hpp>

namespace punch_trace {

struct TracedFunction {
  std::string spec;                  //!< As written in PUNCH_TRACE ("write", "libc.so.6:write").
  punch::patcher::SymbolRef symbol;  //!< What resolved it.
  void* target = nullptr;            //!< nullptr when it did not resolve (see `unresolved`).
  std::string unresolved;            //!< Why resolution failed.
  std::string shares_code_with;      //!< Another traced name at the same address (memcpy/memmove).
  //! Set once the four fields above are final: a child forked while they were
  //! being written reads none of them.
  std::atomic<bool> looked_up{false};

  //! The detour counts into `calls` and jumps through `original`, which always
  //! holds the trampoline of a hook installed now or earlier (retired code is
  //! released only while every traced function is installed: see toggler).
  alignas(64) std::atomic<std::uint64_t> calls{0};
  std::atomic<std::uint64_t> ticks{0};  //!< Time stamp counter ticks inside the function (timed only).
  std::atomic<void*> original{nullptr};
  bool timed = false;  //!< Named in PUNCH_TRACE_TIME: the detour calls the original.
  void* detour = nullptr;
  punch::patcher::Hook hook;

  // Written by the thread that installs and toggles, read by the summary.
  std::atomic<std::uint64_t> installs{0};
  std::atomic<std::uint64_t> removals{0};
  std::atomic<std::uint64_t> refusals{0};
  std::atomic<bool> redirecting{false};  //!< Installed and enabled: calls reach the detour.
  std::string first_refusal;             //!< Set once, before refusals is first incremented.
};

}  // namespace punch_trace
