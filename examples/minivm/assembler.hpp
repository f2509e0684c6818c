// minivm's text format, one statement per line ('#' starts a comment, commas
// are spaces):
//
//   global NAME INT          a global and its initial value
//   func NAME PARAMS         starts a function; `end` closes it
//   LABEL:                   names the next instruction
//   OP OPERANDS              rN registers, integers, property/global/function
//                            names and labels, in the order of bytecode.hpp:
//     const r0 5    mov r0 r1    add|sub|mul|lt|eq r0 r1 r2    addi r0 r1 -3
//     new r0    get r0 r1 x    set r1 x r2    gget r0 g    gset g r0
//     call r0 f r1 r2    jmp L    jz r0 L    jnz r0 L    ret r0
//
// The program runs `main`, which takes no parameters.
#pragma once

#include <string_view>

#include <punch/result.hpp>

#include "bytecode.hpp"

namespace minivm {

//! Parses a program; errors name the line and the reason.
punch::Result<Program> assemble(std::string_view text);

}  // namespace minivm
