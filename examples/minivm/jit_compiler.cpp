#include "jit_compiler.hpp"

#include <cstddef>
#include <map>
#include <string>

#include <asmjit/x86.h>

#include "jit_helpers.hpp"
#include "patch_sites.hpp"
#include "vm.hpp"

namespace minivm {
namespace {

namespace x86 = asmjit::x86;
using asmjit::Label;

x86::Mem reg(int r) { return x86::qword_ptr(x86::rbx, r * 8); }
const x86::Mem kThreadError = x86::byte_ptr(x86::r12, offsetof(JitThread, error));
const x86::Mem kStackLimit = x86::qword_ptr(x86::r12, offsetof(JitThread, stack_limit));

template <class Fn>
std::uint64_t address_of(Fn* fn) {
  return reinterpret_cast<std::uint64_t>(fn);
}

// Marks of patch points, turned into addresses once the code has its place.
struct PendingCache {
  InlineCache* cache;
  patch::Mark way[InlineCache::kWays];
};
struct PendingCall {
  CallSite* call;
  patch::Mark at;
};
struct PendingGuard {
  GuardSite* guard;
  patch::Mark at;
  Label exit;
};

class Compiler {
 public:
  Compiler(Vm& vm, FunctionState& f, CodeVersion& version, asmjit::CodeHolder& code)
      : vm_(vm), f_(f), fn_(*f.code), version_(version), a_(&code) {}

  void emit();
  //! Turns the marks and labels into addresses, the code being at `base`.
  punch::Status place(const asmjit::CodeHolder& code, std::uintptr_t base);
  //! Where the code may go for every call to reach its callee.
  punch::runtime::AddressWindow window() const;

 private:
  void instruction(const Instr& in, int pc);
  void arithmetic(const Instr& in, int pc);
  void property(const Instr& in, int pc);
  void call(const Instr& in, int pc);
  void read_global(const Instr& in, int pc);
  void guard(int global, int pc);
  void call_helper(std::uint64_t helper) {
    a_.mov(x86::rax, helper);
    a_.call(x86::rax);
  }
  void return_on_error() {
    a_.cmp(kThreadError, 0);
    a_.jne(epilogue_);
  }
  void check_int(x86::Gp r, int pc) {
    a_.test(r.r8(), 1);
    a_.jnz(exit_at(pc));
  }
  Label exit_at(int pc);
  void emit_exits();

  Vm& vm_;
  FunctionState& f_;
  const Function& fn_;
  CodeVersion& version_;
  x86::Assembler a_;
  std::vector<Label> at_pc_;
  std::map<int, Label> exits_;
  Label epilogue_;
  std::vector<PendingCache> caches_;
  std::vector<PendingCall> calls_;
  std::vector<PendingGuard> guards_;
};

Label Compiler::exit_at(int pc) {
  auto [it, added] = exits_.try_emplace(pc);
  if (added) it->second = a_.newLabel();
  return it->second;
}

void Compiler::emit() {
  for (std::size_t i = 0; i < fn_.code.size(); ++i) at_pc_.push_back(a_.newLabel());
  epilogue_ = a_.newLabel();

  patch::emit_entry(a_);
  a_.push(x86::rbx);
  a_.push(x86::r12);
  a_.push(x86::rbp);  // Keeps the stack 16-byte aligned at calls.
  a_.mov(x86::rbx, x86::rdi);
  a_.mov(x86::r12, x86::rsi);
  a_.xor_(x86::eax, x86::eax);
  for (int r = fn_.params; r < fn_.regs; ++r) a_.mov(reg(r), x86::rax);

  std::vector<bool> loop_head(fn_.code.size());
  for (std::size_t pc = 0; pc < fn_.code.size(); ++pc)
    if (jumps_back(fn_.code[pc], static_cast<int>(pc))) loop_head[fn_.code[pc].target] = true;
  for (std::size_t pc = 0; pc < fn_.code.size(); ++pc) {
    a_.bind(at_pc_[pc]);
    if (loop_head[pc]) guard(-1, static_cast<int>(pc));  // Where an invalidated version lets go of a loop.
    instruction(fn_.code[pc], static_cast<int>(pc));
  }
  a_.bind(epilogue_);
  a_.pop(x86::rbp);
  a_.pop(x86::r12);
  a_.pop(x86::rbx);
  a_.ret();
  emit_exits();
}

// Each exit finishes the function in the interpreter and returns its value.
void Compiler::emit_exits() {
  for (auto& [pc, label] : exits_) {
    a_.bind(label);
    a_.mov(x86::rdi, x86::r12);
    a_.mov(x86::rsi, reinterpret_cast<std::uint64_t>(&f_));
    a_.mov(x86::rdx, x86::rbx);
    a_.mov(x86::ecx, pc);
    call_helper(address_of(&jit_helpers::deopt));
    a_.jmp(epilogue_);
  }
}

void Compiler::instruction(const Instr& in, int pc) {
  switch (in.op) {
    case Op::kConst:
      a_.mov(x86::rax, from_int(in.imm));
      a_.mov(reg(in.a), x86::rax);
      break;
    case Op::kMov:
      a_.mov(x86::rax, reg(in.b));
      a_.mov(reg(in.a), x86::rax);
      break;
    case Op::kAdd:
    case Op::kSub:
    case Op::kMul:
    case Op::kAddi:
    case Op::kLt:
    case Op::kEq: arithmetic(in, pc); break;
    case Op::kNew:
      a_.mov(x86::rdi, x86::r12);
      call_helper(address_of(&jit_helpers::new_object));
      a_.mov(reg(in.a), x86::rax);
      break;
    case Op::kGet:
    case Op::kSet: property(in, pc); break;
    case Op::kGget: read_global(in, pc); break;
    case Op::kGset:
      a_.mov(x86::rdi, x86::r12);
      a_.mov(x86::esi, in.a);
      a_.mov(x86::rdx, reg(in.b));
      call_helper(address_of(&jit_helpers::write_global));
      return_on_error();
      break;
    case Op::kCall: call(in, pc); break;
    case Op::kJmp: a_.jmp(at_pc_[in.target]); break;
    case Op::kJz:
    case Op::kJnz:
      a_.cmp(reg(in.a), 0);
      if (in.op == Op::kJz)
        a_.je(at_pc_[in.target]);
      else
        a_.jne(at_pc_[in.target]);
      break;
    case Op::kRet:
      a_.mov(x86::rax, reg(in.a));
      a_.jmp(epilogue_);
      break;
  }
}

// Tagged integers add, subtract and compare as they are; anything else exits.
void Compiler::arithmetic(const Instr& in, int pc) {
  a_.mov(x86::rax, reg(in.b));
  if (in.op == Op::kAddi) {
    check_int(x86::rax, pc);
    a_.mov(x86::rcx, from_int(in.imm));
    a_.add(x86::rax, x86::rcx);
    a_.mov(reg(in.a), x86::rax);
    return;
  }
  a_.mov(x86::rcx, reg(in.c));
  if (in.op != Op::kEq) {
    a_.mov(x86::edx, x86::eax);
    a_.or_(x86::edx, x86::ecx);
    check_int(x86::rdx, pc);
  }
  switch (in.op) {
    case Op::kAdd: a_.add(x86::rax, x86::rcx); break;
    case Op::kSub: a_.sub(x86::rax, x86::rcx); break;
    case Op::kMul:
      a_.sar(x86::rax, 1);
      a_.imul(x86::rax, x86::rcx);
      break;
    default:  // kLt, kEq: 0 or 1, tagged.
      a_.xor_(x86::edx, x86::edx);
      a_.cmp(x86::rax, x86::rcx);
      if (in.op == Op::kLt)
        a_.setl(x86::dl);
      else
        a_.sete(x86::dl);
      a_.lea(x86::rax, x86::ptr(x86::rdx, x86::rdx));
      break;
  }
  a_.mov(reg(in.a), x86::rax);
}

// get a b name / set a name c: the object's shape id against each way's
// immediate's low half; a match loads or stores at its high half's offset.
void Compiler::property(const Instr& in, int pc) {
  const bool is_get = in.op == Op::kGet;
  auto& cache = version_.caches.emplace_back(std::make_unique<InlineCache>());
  cache->name = is_get ? in.c : in.b;
  cache->owner = &version_;
  PendingCache pending{cache.get(), {}};

  a_.mov(x86::rax, reg(is_get ? in.b : in.a));
  a_.test(x86::al, 1);
  a_.jz(exit_at(pc));  // An integer: the interpreter reports it.
  if (!is_get) a_.mov(x86::r8, reg(in.c));
  a_.mov(x86::edx, x86::dword_ptr(x86::rax, kShapeIdOffset - 1));
  Label done = a_.newLabel();
  for (int way = 0; way < InlineCache::kWays; ++way) {
    Label next = a_.newLabel();
    pending.way[way] = patch::emit_imm64(a_, x86::rcx, 0);
    a_.cmp(x86::edx, x86::ecx);
    a_.jne(next);
    a_.shr(x86::rcx, 32);
    if (is_get)
      a_.mov(x86::rax, x86::qword_ptr(x86::rax, x86::rcx));
    else
      a_.mov(x86::qword_ptr(x86::rax, x86::rcx), x86::r8);
    a_.jmp(done);
    a_.bind(next);
  }
  a_.mov(x86::rdi, x86::r12);
  a_.mov(x86::rsi, reinterpret_cast<std::uint64_t>(cache.get()));
  a_.mov(x86::rdx, x86::rax);
  if (is_get) {
    call_helper(address_of(&jit_helpers::get_miss));
  } else {
    a_.mov(x86::rcx, x86::r8);
    call_helper(address_of(&jit_helpers::set_miss));
    return_on_error();
  }
  a_.bind(done);
  if (is_get) a_.mov(reg(in.a), x86::rax);
  caches_.push_back(pending);
}

void Compiler::call(const Instr& in, int pc) {
  FunctionState& callee = vm_.function(in.b);
  a_.lea(x86::rdi, reg(fn_.frame_size()));
  a_.cmp(x86::rdi, kStackLimit);
  a_.jae(exit_at(pc));  // The interpreter reports the overflow.
  for (int i = 0; i < in.nargs; ++i) {
    a_.mov(x86::rax, reg(in.args[i]));
    a_.mov(x86::qword_ptr(x86::rdi, i * 8), x86::rax);
  }
  a_.mov(x86::rsi, x86::r12);
  void* entry = callee.entry.load();
  const std::uintptr_t target = entry ? reinterpret_cast<std::uintptr_t>(entry) : callee.stub;
  auto& site = version_.calls.emplace_back(std::make_unique<CallSite>());
  site->callee = &callee;
  site->target = target;
  site->owner = &version_;
  calls_.push_back({site.get(), patch::emit_call(a_, target)});
  return_on_error();
  a_.mov(reg(in.a), x86::rax);
}

void Compiler::guard(int global, int pc) {
  auto& guard = version_.guards.emplace_back(std::make_unique<GuardSite>());
  guard->global = global;
  guard->owner = &version_;
  guards_.push_back({guard.get(), patch::emit_guard(a_), exit_at(pc)});
}

// A global that rarely changes is a constant behind a guard its next change
// trips; one that changes often is loaded.
void Compiler::read_global(const Instr& in, int pc) {
  GlobalState& global = vm_.global(in.b);
  if (global.foldable()) {
    guard(in.b, pc);
    a_.mov(x86::rax, global.value.load());
  } else {
    a_.mov(x86::rax, reinterpret_cast<std::uint64_t>(&global.value));
    a_.mov(x86::rax, x86::qword_ptr(x86::rax));
  }
  a_.mov(reg(in.a), x86::rax);
}

punch::Status Compiler::place(const asmjit::CodeHolder& code, std::uintptr_t base) {
  auto at = [&](const patch::Mark& mark, std::uintptr_t& out) -> punch::Status {
    auto address = patch::resolve(mark, code, base);
    if (!address) return tl::unexpected(std::move(address).error());
    out = *address;
    return {};
  };
  for (const PendingCache& p : caches_)
    for (int way = 0; way < InlineCache::kWays; ++way) {
      if (auto ok = at(p.way[way], p.cache->site[way]); !ok) return ok;
    }
  for (const PendingCall& p : calls_)
    if (auto ok = at(p.at, p.call->site); !ok) return ok;
  for (const PendingGuard& p : guards_) {
    if (auto ok = at(p.at, p.guard->site); !ok) return ok;
    p.guard->exit = base + code.labelOffsetFromBase(p.exit);
  }
  return {};
}

punch::runtime::AddressWindow Compiler::window() const {
  std::vector<patch::Mark> marks;
  for (const PendingCall& p : calls_) marks.push_back(p.at);
  return punch::patcher::code_window(marks);
}

}  // namespace

punch::Result<std::unique_ptr<CodeVersion>> compile_function(Vm& vm, FunctionState& f, punch::runtime::Jit& jit) {
  auto version = std::make_unique<CodeVersion>();
  version->function = &f;
  asmjit::CodeHolder code;
  code.init(punch::runtime::Jit::environment());
  Compiler compiler(vm, f, *version, code);
  compiler.emit();
  const std::string name = "minivm:" + f.code->name;  // What perf, gdb and walk_stack call it.
  auto added = jit.add(code, {name}, compiler.window());
  if (!added) return tl::unexpected(std::move(added).error());
  version->begin = reinterpret_cast<std::uintptr_t>(*added);
  if (auto ok = compiler.place(code, version->begin); !ok) {
    (void)jit.release(*added);  // No thread has seen it.
    return tl::unexpected(std::move(ok).error());
  }
  return version;
}

}  // namespace minivm
