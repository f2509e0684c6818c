// Tripwires: a trap byte over the instruction a sleeping thread resumes at.
//
// A hold leaves threads asleep in poll, nanosleep and the like (a signal
// would make those calls fail with EINTR), and such a thread may wake while
// code changes: it would then run the program unheld, and a vfork child it
// starts runs in this memory with default signal handlers, where any trap
// byte kills it. A tripwire stops it first: the sleeper's next instruction
// after the `syscall` traps, and punch's trap handler holds it until the
// hold is released (catch_woken_sleeper in threads.cpp). The table only
// grows (a few addresses: the program's sleeping system-call wrappers), so a
// trap taken before a tripwire was removed and delivered after is still
// recognised. Only the thread holding the others arms and disarms.
#pragma once

#include <cstdint>

#include <punch/runtime/code_writer.hpp>

namespace punch::runtime::detail {

//! Puts `trap` over the byte at `pc` (writing through `writer`), remembering
//! the byte it replaces. False when the table is full, the byte is
//! unreadable, or the write failed: nothing changed then.
bool arm_tripwire(CodeWriter& writer, std::uintptr_t pc, std::uint8_t trap) noexcept;

//! Whether a tripwire stands at `pc` now.
bool tripwire_armed_at(std::uintptr_t pc) noexcept;

//! Puts back the byte of every armed tripwire (a failed write is tried three
//! times; one that still fails stays armed, see restore_tripwire).
void disarm_tripwires(CodeWriter& writer) noexcept;

//! What a trap at `address` met: no tripwire of ours, one that stands, or
//! one taken away since (the trap came before its byte was put back).
enum class Tripwire { kNone, kArmed, kRemoved };
Tripwire tripwire_at(std::uintptr_t address, std::uint8_t trap) noexcept;

//! Puts back the byte of the tripwire at `address` with a raw write to
//! /proc/self/mem (async-signal-safe: for a thread that meets a tripwire
//! and must not wait). False if it could not.
bool restore_tripwire(std::uintptr_t address) noexcept;

}  // namespace punch::runtime::detail
