// Which sites' old code the trap handler carries out itself instead of
// sending the thread to an out-of-line copy (trap_handler.cpp runs it).
#pragma once

#include <cstdint>
#include <span>

#include <punch/disasm/instruction.hpp>

#include "flight_table.hpp"

namespace punch::patcher::live {

//! How the trap handler can run a site's old code (`insns`, from `bytes`)
//! without a copy: one direct jmp or call, one nop (an int3 is a trap, never
//! emulated), or one load of a constant into a register (a JIT's inline cache
//! or constant slot). A jmp out of the site followed by more bytes counts as
//! one: nothing can reach those bytes (a hook's entry jump and the int3
//! padding after it). Sets `f`'s emulation, and its target and register.
void choose_emulation(FlightSite& f, std::span<const std::uint8_t> bytes, std::span<const disasm::Instruction> insns);

}  // namespace punch::patcher::live
