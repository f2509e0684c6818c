// minivm bytecode: a register machine, one instruction per line of the text format.
//
// Each function has registers r0..r(n-1), the first `params` of them holding
// its arguments and the rest starting at 0. Operands a, b, c are register
// numbers unless the opcode's comment says otherwise.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace minivm {

enum class Op : std::uint8_t {
  kConst,  // a = imm
  kMov,    // a = b
  kAdd,    // a = b + c        (integers; anything else is a type error)
  kSub,    // a = b - c
  kMul,    // a = b * c
  kAddi,   // a = b + imm
  kLt,     // a = b < c ? 1 : 0 (integers)
  kEq,     // a = b == c ? 1 : 0 (any values: objects by identity)
  kNew,    // a = a new empty object
  kGet,    // a = b.name[c]     (0 when the object has no such property)
  kSet,    // a.name[b] = c     (adds the property: a shape transition)
  kGget,   // a = global[b]
  kGset,   // global[a] = b
  kCall,   // a = function[b](args...)
  kJmp,    // goto target
  kJz,     // if a == 0 goto target
  kJnz,    // if a != 0 goto target
  kRet,    // return a
};

constexpr int kMaxArgs = 6;

struct Instr {
  Op op = Op::kRet;
  std::int32_t a = 0, b = 0, c = 0;
  std::int64_t imm = 0;     // kConst, kAddi.
  std::int32_t target = 0;  // Jumps: instruction index.
  std::uint8_t nargs = 0;   // kCall.
  std::array<std::uint8_t, kMaxArgs> args{};
  int line = 0;  // In the source text, for messages.
};

//! Whether `in`, at index `pc`, is a jump back to `in.target`, a loop head.
inline bool jumps_back(const Instr& in, int pc) {
  return (in.op == Op::kJmp || in.op == Op::kJz || in.op == Op::kJnz) && in.target <= pc;
}

struct Function {
  std::string name;
  int params = 0;
  int regs = 1;  // At least 1, and more than every register the code names.
  std::vector<Instr> code;
  //! Where a callee's registers start, from this function's: at least 16
  //! values on, which bounds the depth of calls (and of the native stack)
  //! by the size of the value stack.
  int frame_size() const { return regs < 16 ? 16 : regs; }
};

struct Global {
  std::string name;
  std::int64_t initial = 0;
};

struct Program {
  std::vector<Function> functions;
  std::vector<Global> globals;
  std::vector<std::string> names;  // Property names, by id.
  int main = -1;                   // Index of `main` (no parameters).
  int max_regs = 1;                // The largest `regs` of any function.
};

}  // namespace minivm
