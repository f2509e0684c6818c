// hello_jit: JIT a few functions with asmjit into pages that are never
// writable, call them, and show the /proc/self/maps lines holding them.
#include <asmjit/x86.h>

#include <cstdio>
#include <set>

#include <punch/runtime/jit.hpp>
#include <punch/runtime/maps.hpp>

using namespace asmjit;
using namespace punch::runtime;

namespace {

int twice(int x) { return 2 * x; }

// int add(int a, int b) { return a + b; }
void emit_add(CodeHolder& code) {
  code.init(Jit::environment());
  x86::Assembler a(&code);
  a.lea(x86::eax, x86::ptr(x86::rdi, x86::rsi));
  a.ret();
}

// long factorial(long n) { long r = 1; while (n > 1) r *= n--; return r; }
void emit_factorial(CodeHolder& code) {
  code.init(Jit::environment());
  x86::Assembler a(&code);
  Label loop = a.newLabel(), done = a.newLabel();
  a.mov(x86::eax, 1);
  a.bind(loop);
  a.cmp(x86::rdi, 1);
  a.jle(done);
  a.imul(x86::rax, x86::rdi);
  a.dec(x86::rdi);
  a.jmp(loop);
  a.bind(done);
  a.ret();
}

// int call_twice(int x) { return twice(x) + 1; }: a call back into this program.
void emit_call_twice(CodeHolder& code) {
  code.init(Jit::environment());
  x86::Assembler a(&code);
  a.sub(x86::rsp, 8);
  a.call(imm(reinterpret_cast<std::uint64_t>(&twice)));
  a.add(x86::rsp, 8);
  a.inc(x86::eax);
  a.ret();
}

}  // namespace

int main() {
  auto heap = CodeHeap::global();  // Writer chosen by PUNCH_WRITE_METHOD (default: auto).
  if (!heap) {
    std::fprintf(stderr, "hello_jit: %s\n", heap.error().describe().c_str());
    return 1;
  }
  Jit jit(**heap);
  CodeHolder c1, c2, c3;
  emit_add(c1);
  emit_factorial(c2);
  emit_call_twice(c3);
  CodeHolder* all[] = {&c1, &c2, &c3};
  auto fns = jit.add_batch(all);  // One write, one sync for all three.
  if (!fns) {
    std::fprintf(stderr, "hello_jit: %s\n", fns.error().describe().c_str());
    return 1;
  }
  auto add = reinterpret_cast<int (*)(int, int)>((*fns)[0]);
  auto factorial = reinterpret_cast<long (*)(long)>((*fns)[1]);
  auto call_twice = reinterpret_cast<int (*)(int)>((*fns)[2]);
  std::printf("write method: %s\n", std::string(to_string((**heap).writer().method())).c_str());
  const int sum = add(2, 40);
  const long f10 = factorial(10);
  const int t = call_twice(20);
  std::printf("add(2, 40)     = %d\n", sum);
  std::printf("factorial(10)  = %ld\n", f10);
  std::printf("call_twice(20) = %d\n", t);
  const bool right = sum == 42 && f10 == 3628800 && t == 41;

  // The code lives in read+execute pages; nothing maps them writable.
  bool all_rx = true;
  std::set<std::uintptr_t> shown;
  for (void* fn : *fns) {
    auto m = query_mapping(reinterpret_cast<std::uintptr_t>(fn));
    if (!m) {  // A sandbox without /proc: the code ran, its pages cannot be listed.
      std::printf("could not check the code's page permissions: %s\n", m.error().describe().c_str());
      break;
    }
    if (!shown.insert(m->start).second) continue;
    std::printf("%012lx-%012lx %c%c%c%c %s\n", static_cast<unsigned long>(m->start), static_cast<unsigned long>(m->end),
                m->readable ? 'r' : '-', m->writable ? 'w' : '-', m->executable ? 'x' : '-', m->shared ? 's' : 'p',
                m->path.c_str());
    all_rx = all_rx && m->readable && !m->writable && m->executable;
  }
  for (void* fn : *fns) {
    if (auto released = jit.release(fn); !released) {
      std::fprintf(stderr, "hello_jit: %s\n", released.error().describe().c_str());
      return 1;
    }
  }
  if (!right) std::fprintf(stderr, "hello_jit: a function returned a wrong result\n");
  if (!all_rx) std::fprintf(stderr, "hello_jit: code is in a page that is not read+execute only\n");
  return right && all_rx ? 0 : 1;
}
