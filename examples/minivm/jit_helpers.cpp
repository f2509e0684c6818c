#include "jit_helpers.hpp"

#include "interpreter.hpp"
#include "vm.hpp"

namespace minivm::jit_helpers {

Value call_interpreted(Value* regs, JitThread* t, FunctionState* f) {
  return t->owner->vm.call_interpreted(*t->owner, *f, regs);
}

Value deopt(JitThread* t, FunctionState* f, Value* regs, int pc) {
  t->owner->vm.counters().deopts.fetch_add(1, std::memory_order_relaxed);
  return interpret(*t->owner, *f, regs, pc);
}

Value get_miss(JitThread* t, InlineCache* cache, Value object) { return t->owner->vm.get_miss(*cache, object); }

void set_miss(JitThread* t, InlineCache* cache, Value object, Value v) {
  t->owner->vm.set_miss(*t->owner, *cache, object, v);
}

Value new_object(JitThread* t) { return from_object(t->owner->objects.allocate(t->owner->vm.shapes().empty().id)); }

void write_global(JitThread* t, int global, Value v) { t->owner->vm.write_global(*t->owner, global, v); }

}  // namespace minivm::jit_helpers
