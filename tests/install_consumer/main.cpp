// Uses each installed layer once: JIT a function (runtime), decode it
// (disasm), patch it live (patcher). Exit 0 when all three worked.
#include <asmjit/x86.h>

#include <cstdio>

#include <punch/disasm/instruction.hpp>
#include <punch/patcher/transaction.hpp>
#include <punch/runtime/jit.hpp>

int main() {
  auto heap = punch::runtime::CodeHeap::global();
  if (!heap) return std::fprintf(stderr, "%s\n", heap.error().describe().c_str()), 1;
  punch::runtime::Jit jit(**heap);
  asmjit::CodeHolder code;
  code.init(punch::runtime::Jit::environment());
  asmjit::x86::Assembler a(&code);
  a.mov(asmjit::x86::eax, 1);  // b8 01 00 00 00
  a.ret();
  auto fn = jit.add_as<int (*)()>(code);
  if (!fn) return std::fprintf(stderr, "%s\n", fn.error().describe().c_str()), 1;

  const auto address = reinterpret_cast<std::uintptr_t>(*fn);
  const std::uint8_t* bytes = reinterpret_cast<const std::uint8_t*>(address);
  auto insn = punch::disasm::decode({address, {bytes, 6}}, address);
  if (!insn || insn->length != 5) return std::fprintf(stderr, "decode failed\n"), 1;

  punch::patcher::Transaction tx;
  auto ok = tx.add({address, {0xB8, 1, 0, 0, 0}, {0xB8, 2, 0, 0, 0}, {}});
  if (ok) ok = tx.commit();
  if (!ok) return std::fprintf(stderr, "%s\n", ok.error().describe().c_str()), 1;
  const int result = (*fn)();
  std::printf("punch_consumer: %d\n", result);
  return result == 2 ? 0 : 1;
}
