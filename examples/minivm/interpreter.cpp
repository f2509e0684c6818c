#include "interpreter.hpp"

#include "vm.hpp"

namespace minivm {
namespace {

// Fails the run at `in`; returns the value a failed call returns.
Value fail_at(ThreadState& t, const Instr& in, const char* what) {
  t.fail("line " + std::to_string(in.line) + ": " + what);
  return 0;
}

bool both_ints(ThreadState& t, Value a, Value b, const Instr& in) {
  if (is_int(a) && is_int(b)) return true;
  fail_at(t, in, "arithmetic on an object");
  return false;
}

}  // namespace

Value interpret(ThreadState& t, FunctionState& f, Value* regs, int pc) {
  Vm& vm = t.vm;
  const std::vector<Instr>& code = f.code->code;
  for (;;) {
    const Instr& in = code[pc++];
    Value* r = regs;
    switch (in.op) {
      case Op::kConst: r[in.a] = from_int(in.imm); break;
      case Op::kMov: r[in.a] = r[in.b]; break;
      case Op::kAdd:
        if (!both_ints(t, r[in.b], r[in.c], in)) return 0;
        r[in.a] = r[in.b] + r[in.c];
        break;
      case Op::kSub:
        if (!both_ints(t, r[in.b], r[in.c], in)) return 0;
        r[in.a] = r[in.b] - r[in.c];
        break;
      case Op::kMul:
        if (!both_ints(t, r[in.b], r[in.c], in)) return 0;
        r[in.a] = static_cast<Value>(to_int(r[in.b])) * r[in.c];
        break;
      case Op::kAddi:
        if (!both_ints(t, r[in.b], 0, in)) return 0;
        r[in.a] = r[in.b] + from_int(in.imm);
        break;
      case Op::kLt:
        if (!both_ints(t, r[in.b], r[in.c], in)) return 0;
        r[in.a] = from_int(static_cast<std::int64_t>(r[in.b]) < static_cast<std::int64_t>(r[in.c]));
        break;
      case Op::kEq: r[in.a] = from_int(r[in.b] == r[in.c]); break;
      case Op::kNew: r[in.a] = from_object(t.objects.allocate(vm.shapes().empty().id)); break;
      case Op::kGet:
        if (!is_object(r[in.b])) return fail_at(t, in, "`get` on an integer");
        r[in.a] = vm.get_property(r[in.b], in.c);
        break;
      case Op::kSet:
        if (!is_object(r[in.a])) return fail_at(t, in, "`set` on an integer");
        vm.set_property(t, r[in.a], in.b, r[in.c]);
        if (t.jit.error) return 0;
        break;
      case Op::kGget: r[in.a] = vm.read_global(in.b); break;
      case Op::kGset: vm.write_global(t, in.a, r[in.b]); break;
      case Op::kCall: {
        FunctionState& callee = vm.function(in.b);
        Value* callee_regs = regs + f.code->frame_size();
        if (callee_regs >= t.jit.stack_limit) return fail_at(t, in, "stack overflow");
        for (int i = 0; i < in.nargs; ++i) callee_regs[i] = r[in.args[i]];
        Value v = vm.call(t, callee, callee_regs);
        if (t.jit.error) return 0;
        r[in.a] = v;
        break;
      }
      case Op::kJmp: pc = in.target; break;
      case Op::kJz:
        if (r[in.a] == 0) pc = in.target;
        break;
      case Op::kJnz:
        if (r[in.a] != 0) pc = in.target;
        break;
      case Op::kRet: return r[in.a];
    }
  }
}

}  // namespace minivm
