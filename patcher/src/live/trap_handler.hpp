// The SIGTRAP (int3) and SIGSEGV (hlt) handlers of the live protocol.
#pragma once

#include <punch/patcher/transaction.hpp>
#include <punch/result.hpp>

namespace punch::patcher::live {

//! Installs the handler for `trap` once per process (SIGTRAP for int3,
//! SIGSEGV for hlt), chained to the handler that was there, and confirms on
//! every call that it is still the installed one: a handler installed over
//! punch's later would see punch's traps first, so that is a kConflict.
Status ensure_trap_handler(TrapInstruction trap);

//! The byte written over a site's first byte in step 1.
constexpr std::uint8_t trap_byte(TrapInstruction trap) { return trap == TrapInstruction::kHlt ? 0xF4 : 0xCC; }

}  // namespace punch::patcher::live
