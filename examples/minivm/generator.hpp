// Random minivm programs for testing the tiers against each other: integer
// arithmetic, objects whose properties are added in random orders, globals
// written mid-run, forward branches, counted loops and calls to earlier
// functions (so every program terminates and never fails).
#pragma once

#include <cstdint>
#include <string>

namespace minivm {

//! The text of a random program; the same seed gives the same program.
std::string generate_program(std::uint32_t seed);

}  // namespace minivm
