// The mnemonic of an instruction as disasm formats it ("push", "xbegin"): the
// public Instruction carries facts, not Zydis's names, so tests that pin an
// instruction's identity read it from the formatted text.
#pragma once

#include <cstdint>
#include <string>

#include <punch/disasm/instruction.hpp>

namespace punch::test {

inline std::string mnemonic_at(disasm::CodeSpan code, std::uintptr_t address) {
  const std::string text = disasm::format(code, address);
  return text.substr(0, text.find(' '));
}

}  // namespace punch::test
