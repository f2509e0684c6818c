// punch::disasm branch sweep — every direct branch a stretch of code might take.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include <punch/disasm/instruction.hpp>

namespace punch::disasm {

//! A direct branch: the instruction's address and where it lands.
struct DirectBranch {
  std::uintptr_t source = 0;
  std::uintptr_t target = 0;
  bool operator==(const DirectBranch&) const = default;
};

//! What one sweep saw.
struct SweepCounts {
  std::size_t instructions = 0;  //!< Instructions decoded.
  std::size_t skipped = 0;       //!< Undecodable bytes stepped over one at a time.
  std::size_t signatures = 0;    //!< Compiler data among code stepped over whole (clang's -fsanitize=function).
};

//! Appends to `out` every direct relative branch of `code` (jmp, jcc, call
//! rel8/rel32, loop*, jrcxz/jecxz, and xbegin's abort target): a linear sweep
//! that decodes each instruction where the previous one ended, from the
//! span's first byte. An undecodable byte is stepped over alone, and the
//! sweep goes on from the next one, which soon falls back into step with
//! real instructions. Data among the code decodes as whatever it looks like,
//! so some of what it finds may be no branch at all (except the data
//! compilers put there on purpose, clang's -fsanitize=function signatures,
//! which it steps over whole): the result answers
//! "might something branch here?", for a check that must not miss a real one.
//! Targets are reported wherever they land, inside the span or not.
SweepCounts sweep_direct_branches(CodeSpan code, std::vector<DirectBranch>& out);

}  // namespace punch::disasm
