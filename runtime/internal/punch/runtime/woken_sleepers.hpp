// punch::runtime — the trap handler's side of a hold's tripwires (threads.cpp).
#pragma once

#include <ucontext.h>

#include <cstdint>

namespace punch::runtime {

//! What catch_woken_sleeper did with a trap.
enum class SleeperCatch {
  kNotATripwire,  //!< Not a tripwire's trap: someone else's.
  kHeld,          //!< A woken sleeper, held until the hold was released.
  kTakenAway,     //!< Met by a thread that must not wait (the holder itself): its byte was put back.
  kLate,          //!< A tripwire gone since the trap: the thread runs on.
};

//! For punch's trap handler (async-signal-safe): when the trap byte `trap`
//! at `address` is a tripwire that ThreadHold::guard_sleepers put over a
//! sleeper's resume address, holds the calling thread until the hold is
//! released (or, for a thread that must not wait, takes the tripwire away)
//! and points the saved rip back at `address`.
SleeperCatch catch_woken_sleeper(std::uintptr_t address, std::uint8_t trap, ucontext_t* context) noexcept;

}  // namespace punch::runtime
