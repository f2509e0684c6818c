#include "generator.hpp"

#include <random>
#include <sstream>

namespace minivm {
namespace {

// Register roles: r0..r5 integers (r0, r1 the parameters), r6 and r7
// objects, r8 the loop counter, r9 a scratch register, r10 the loop bound.
class Generator {
 public:
  explicit Generator(std::uint32_t seed) : random_(seed) {}
  std::string program();

 private:
  int pick(int n) { return static_cast<int>(random_() % static_cast<std::uint32_t>(n)); }
  std::string int_reg() { return "r" + std::to_string(pick(6)); }
  std::string obj_reg() { return "r" + std::to_string(6 + pick(2)); }
  std::string name() { return std::string(1, static_cast<char>('a' + pick(5))); }
  std::string label() { return "L" + std::to_string(labels_++); }
  void function(int index);
  void statements(int count, bool in_loop);
  void statement(bool in_loop);

  std::mt19937 random_;
  std::ostringstream out_;
  int function_ = 0;
  int labels_ = 0;
};

void Generator::statement(bool in_loop) {
  static const char* kArith[] = {"add", "sub", "mul", "lt", "eq"};
  switch (pick(11)) {
    case 0:
    case 1: out_ << "  " << kArith[pick(5)] << ' ' << int_reg() << ' ' << int_reg() << ' ' << int_reg() << '\n'; break;
    case 2: out_ << "  addi " << int_reg() << ' ' << int_reg() << ' ' << pick(200) - 100 << '\n'; break;
    case 3: out_ << "  const " << int_reg() << ' ' << pick(2000) - 1000 << '\n'; break;
    case 4: out_ << "  get " << int_reg() << ' ' << obj_reg() << ' ' << name() << '\n'; break;
    case 5: out_ << "  set " << obj_reg() << ' ' << name() << ' ' << int_reg() << '\n'; break;
    case 6: out_ << (pick(4) ? "  mov " + obj_reg() + ' ' + obj_reg() : "  new " + obj_reg()) << '\n'; break;
    case 7:
      if (function_ > 0)
        out_ << "  call " << int_reg() << " f" << pick(function_) << ' ' << int_reg() << ' ' << int_reg() << '\n';
      break;
    case 8:
      if (pick(3))
        out_ << "  gget " << int_reg() << " g" << pick(2) << '\n';
      else
        out_ << "  gset g" << pick(2) << ' ' << int_reg() << '\n';
      break;
    case 9: {  // if (r) { ... }
      const std::string end = label();
      out_ << "  " << (pick(2) ? "jz " : "jnz ") << int_reg() << ' ' << end << '\n';
      statements(1 + pick(3), in_loop);
      out_ << end << ":\n";
      break;
    }
    case 10: {  // for (r8 = 0; r8 < bound; ++r8) { ... }, not nested.
      if (in_loop) break;
      const std::string head = label(), end = label();
      out_ << "  const r8 0\n  const r10 " << 1 + pick(4) << '\n' << head << ":\n";
      out_ << "  lt r9 r8 r10\n  jz r9 " << end << '\n';
      statements(2 + pick(5), true);
      out_ << "  addi r8 r8 1\n  jmp " << head << '\n' << end << ":\n";
      break;
    }
  }
}

void Generator::statements(int count, bool in_loop) {
  for (int i = 0; i < count; ++i) statement(in_loop);
}

void Generator::function(int index) {
  function_ = index;
  out_ << "func f" << index << " 2\n  new r6\n  new r7\n";
  for (int i = 0; i < 2; ++i) out_ << "  set " << obj_reg() << ' ' << name() << " r" << i << '\n';
  statements(4 + pick(9), false);
  // Fold every integer register into the result, so that all of them count.
  for (int r = 1; r < 6; ++r) out_ << "  add r0 r0 r" << r << '\n';
  out_ << "  ret r0\nend\n\n";
}

std::string Generator::program() {
  out_ << "global g0 " << pick(10) << "\nglobal g1 " << pick(10) << "\n\n";
  const int functions = 2 + pick(3);
  for (int i = 0; i < functions; ++i) function(i);
  // main: calls the last function a few times, globals reset so every run is the same.
  out_ << "func main 0\n  const r0 0\n  gset g0 r0\n  gset g1 r0\n  const r1 0\n";
  for (int i = 0; i < 3; ++i)
    out_ << "  const r2 " << pick(100) << "\n  call r3 f" << functions - 1 << " r2 r1\n  add r1 r1 r3\n";
  out_ << "  ret r1\nend\n";
  return out_.str();
}

}  // namespace

std::string generate_program(std::uint32_t seed) { return Generator(seed).program(); }

}  // namespace minivm
