#include "vm.hpp"

#include <algorithm>
#include <string>
#include <vector>

#include <asmjit/x86.h>

#include "interpreter.hpp"
#include "jit_helpers.hpp"
#include "patch_sites.hpp"

namespace minivm {

using JitFunction = Value (*)(Value* regs, JitThread* t);

std::string describe(Value v) { return is_int(v) ? std::to_string(to_int(v)) : "object"; }

ThreadState::ThreadState(Vm& owner_vm) : vm(owner_vm), stack(1 << 14) {
  jit.stack_limit = stack.data() + stack.size() - vm.program().max_regs;
  jit.owner = this;
  vm.add_thread(this);
}

ThreadState::~ThreadState() { vm.remove_thread(this); }

Vm::Vm(Program program, Tier tier, std::uint32_t hot_calls, punch::runtime::CodeHeap& heap)
    : program_(std::move(program)), tier_(tier), hot_calls_(hot_calls), jit_(heap) {
  for (std::size_t i = 0; i < program_.functions.size(); ++i) {
    FunctionState& f = functions_.emplace_back();
    f.code = &program_.functions[i];
    f.index = static_cast<int>(i);
  }
  for (const Global& g : program_.globals) globals_.emplace_back().value.store(from_int(g.initial));
}

punch::Result<std::unique_ptr<Vm>> Vm::create(Program program, Tier tier, std::uint32_t hot_calls) {
  auto heap = punch::runtime::CodeHeap::global();
  if (!heap) return tl::unexpected(std::move(heap).error());
  std::unique_ptr<Vm> vm(new Vm(std::move(program), tier, hot_calls, **heap));
  if (auto ok = vm->make_stubs(); !ok) return tl::unexpected(std::move(ok).error());
  return vm;
}

Vm::~Vm() {
  (void)punch::patcher::free_retired_code();  // What reclaim() handed to punch and it could not free yet.
  std::vector<void*> code(stubs_);
  for (auto& v : versions_) code.push_back(reinterpret_cast<void*>(v->begin));
  (void)jit_.release_batch(code);  // Nothing to do about a failure while tearing down.
}

// Each function's stub: `mov rdx, f; mov rax, call_interpreted; jmp rax`,
// entered with the registers and thread already in rdi and rsi.
punch::Status Vm::make_stubs() {
  std::vector<asmjit::CodeHolder> holders(functions_.size());
  std::vector<asmjit::CodeHolder*> all;
  std::vector<std::string> names;
  for (std::size_t i = 0; i < functions_.size(); ++i) {
    holders[i].init(punch::runtime::Jit::environment());
    asmjit::x86::Assembler a(&holders[i]);
    a.mov(asmjit::x86::rdx, reinterpret_cast<std::uint64_t>(&functions_[i]));
    a.mov(asmjit::x86::rax, reinterpret_cast<std::uint64_t>(&jit_helpers::call_interpreted));
    a.jmp(asmjit::x86::rax);
    all.push_back(&holders[i]);
    names.push_back("minivm:interpret:" + functions_[i].code->name);
  }
  std::vector<punch::runtime::JitFunctionInfo> infos;
  for (const std::string& name : names) infos.push_back({name});
  auto added = jit_.add_batch(all, infos);
  if (!added) return tl::unexpected(std::move(added).error());
  stubs_ = *added;
  for (std::size_t i = 0; i < functions_.size(); ++i) functions_[i].stub = reinterpret_cast<std::uintptr_t>(stubs_[i]);
  return {};
}

punch::Result<Value> Vm::run(ThreadState& t) {
  t.objects.clear();
  t.jit.error = 0;
  t.error_message.clear();
  t.entered_epoch.store(epoch_.load());
  t.running.store(true);
  const Value v = call(t, functions_[program_.main], t.stack.data());
  t.running.store(false);
  if (t.jit.error) return punch::fail(punch::ErrorCode::kInvalidArgument, t.error_message);
  return v;
}

FunctionState* Vm::find_function(std::string_view name) {
  for (FunctionState& f : functions_)
    if (f.code->name == name) return &f;
  return nullptr;
}

Value Vm::call(ThreadState& t, FunctionState& f, Value* regs) {
  if (void* entry = f.entry.load(std::memory_order_acquire)) return reinterpret_cast<JitFunction>(entry)(regs, &t.jit);
  return call_interpreted(t, f, regs);
}

Value Vm::call_interpreted(ThreadState& t, FunctionState& f, Value* regs) {
  if (tier_ != Tier::kInterpreter && f.entry.load(std::memory_order_acquire) == nullptr) {
    const std::uint32_t calls = f.calls.fetch_add(1, std::memory_order_relaxed) + 1;
    if (tier_ == Tier::kEager || calls >= hot_calls_) tier_up(f);
    if (void* entry = f.entry.load(std::memory_order_acquire))
      return reinterpret_cast<JitFunction>(entry)(regs, &t.jit);
  }
  for (int i = f.code->params; i < f.code->regs; ++i) regs[i] = from_int(0);
  return interpret(t, f, regs, 0);
}

// A function the JIT cannot compile stays interpreted: that is always correct.
void Vm::tier_up(FunctionState& f) {
  std::lock_guard lock(patch_mutex_);
  if (f.entry.load() == nullptr) (void)compile_locked(f);
}

Value Vm::get_property(Value object, int name) const {
  const Object* o = to_object(object);
  const int slot = shapes_.get(o->shape_id).slot_of(name);
  return slot < 0 ? from_int(0) : o->slots[slot];
}

void Vm::set_property(ThreadState& t, Value object, int name, Value v) {
  Object* o = to_object(object);
  const Shape& shape = shapes_.get(o->shape_id);
  int slot = shape.slot_of(name);
  if (slot < 0) {
    const Shape* next = shapes_.transition(shape, name);
    if (!next) return t.fail("an object has at most 8 properties (or the program made too many shapes)");
    slot = static_cast<int>(shape.names.size());
    o->shape_id = next->id;
  }
  o->slots[slot] = v;
}

void Vm::write_global(ThreadState& t, int g, Value v) {
  std::lock_guard lock(patch_mutex_);
  GlobalState& global = globals_[g];
  if (global.value.load() == v) return;  // Nothing that code assumed has changed.
  global.value.store(v, std::memory_order_release);
  ++global.changes;
  std::vector<CodeVersion*> stale;
  for (GuardSite* guard : global.guards)
    if (std::find(stale.begin(), stale.end(), guard->owner) == stale.end()) stale.push_back(guard->owner);
  for (CodeVersion* version : stale) {
    if (auto ok = invalidate_locked(*version); !ok) {
      // That code goes on using the old value: this run, at least, is wrong.
      return t.fail("could not invalidate the code that folded global " + program_.globals[g].name + ": " +
                    ok.error().describe());
    }
  }
}

void Vm::add_thread(ThreadState* t) {
  std::lock_guard lock(threads_mutex_);
  threads_.push_back(t);
}

void Vm::remove_thread(ThreadState* t) {
  std::lock_guard lock(threads_mutex_);
  std::erase(threads_, t);
}

}  // namespace minivm
