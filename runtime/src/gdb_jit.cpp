#include <punch/runtime/gdb_jit.hpp>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <list>
#include <mutex>
#include <string>
#include <vector>

#include <punch/runtime/fork_safe_mutex.hpp>

#include "eh_frame_writer.hpp"
#include "gdb_elf.hpp"
#include "gdb_jit.hpp"

// gdb's JIT interface (gdb manual, "JIT Compilation Interface"): gdb sets a
// breakpoint in __jit_debug_register_code and, each time it is hit, reads the
// entry __jit_debug_descriptor names. The names, layout and version are fixed
// by gdb. gdb finds both through the minimal symbols of any objfile (.symtab
// or .dynsym); punch's CMake target exports them to .dynsym so a stripped
// program keeps them. Another JIT in the process with its own copy (LLVM's
// GDBRegistrationListener) has its own descriptor, which gdb tracks too; if
// the dynamic linker binds both to one copy, registrations from the two must
// not run at the same time (see README).
extern "C" {
enum jit_actions_t : std::uint32_t { JIT_NOACTION = 0, JIT_REGISTER_FN, JIT_UNREGISTER_FN };

struct jit_code_entry {
  jit_code_entry* next_entry;
  jit_code_entry* prev_entry;
  const char* symfile_addr;
  std::uint64_t symfile_size;
};

struct jit_descriptor {
  std::uint32_t version;
  std::uint32_t action_flag;
  jit_code_entry* relevant_entry;
  jit_code_entry* first_entry;
};

// Must stay a real, called function: gdb's breakpoint lives in it.
[[gnu::noinline, gnu::used, gnu::visibility("default")]] void __jit_debug_register_code() {
  asm volatile("" ::: "memory");
}

[[gnu::used, gnu::visibility("default")]] jit_descriptor __jit_debug_descriptor = {1, JIT_NOACTION, nullptr, nullptr};
}

namespace punch::runtime {
namespace detail {
namespace {

struct Function {
  std::uintptr_t start;
  std::size_t size;
  std::string name;
  std::vector<FrameRow> rows;  // Empty: no unwind info.
};

// One registered object: the functions it names, its bytes, and gdb's entry for it.
struct Batch {
  std::vector<Function> functions;
  std::vector<std::uint8_t> object;
  jit_code_entry entry{};
};

struct State {
  ForkSafeMutex mutex{LockRank::kDebugInfo};
  std::list<Batch> batches;  // Stable addresses: gdb holds pointers to the entries.
  std::atomic<bool> enabled{false};
  std::atomic<std::size_t> count{0};
};

State& state() {
  static State* s = [] {
    auto* st = new State;  // Never destroyed: gdb may read the list while the process exits.
    const char* env = std::getenv("PUNCH_GDB");
    st->enabled = env && std::strcmp(env, "1") == 0;
    return st;
  }();
  return *s;
}
// Built while the program loads, not under a function-local static's guard a
// fork could copy taken (see "Fork safety" in docs/design.md).
[[maybe_unused]] const bool g_state_built = (static_cast<void>(state()), true);

void notify(jit_code_entry* entry, jit_actions_t action) {
  __jit_debug_descriptor.relevant_entry = entry;
  __jit_debug_descriptor.action_flag = action;
  __jit_debug_register_code();
  __jit_debug_descriptor.action_flag = JIT_NOACTION;
  __jit_debug_descriptor.relevant_entry = nullptr;
}

void link(State& s, Batch& batch) {
  std::uintptr_t lo = UINTPTR_MAX, hi = 0;
  std::vector<GdbSymbol> symbols;
  std::vector<FunctionFrame> frames;
  for (const Function& f : batch.functions) {
    lo = std::min(lo, f.start);
    hi = std::max(hi, f.start + f.size);
    symbols.push_back(GdbSymbol{f.start, f.size, f.name});
    if (!f.rows.empty()) frames.push_back(FunctionFrame{f.start, f.size, f.rows});
  }
  const std::vector<std::uint8_t> eh_frame = frames.empty() ? std::vector<std::uint8_t>{} : write_eh_frame(frames);
  batch.object = build_gdb_object(lo, hi - lo, symbols, eh_frame);
  batch.entry = jit_code_entry{__jit_debug_descriptor.first_entry, nullptr,
                               reinterpret_cast<const char*>(batch.object.data()), batch.object.size()};
  if (batch.entry.next_entry) batch.entry.next_entry->prev_entry = &batch.entry;
  __jit_debug_descriptor.first_entry = &batch.entry;
  notify(&batch.entry, JIT_REGISTER_FN);
  s.count.fetch_add(1, std::memory_order_relaxed);
}

void unlink(State& s, Batch& batch) {
  jit_code_entry& e = batch.entry;
  if (e.prev_entry)
    e.prev_entry->next_entry = e.next_entry;
  else
    __jit_debug_descriptor.first_entry = e.next_entry;
  if (e.next_entry) e.next_entry->prev_entry = e.prev_entry;
  notify(&e, JIT_UNREGISTER_FN);
  s.count.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace

void gdb_jit_added(std::span<const code_events::AddedCode> added) {
  State& s = state();
  if (added.empty() || !s.enabled.load(std::memory_order_relaxed)) return;
  Batch batch;
  for (const code_events::AddedCode& code : added)
    batch.functions.push_back(
        Function{code.address, code.size, std::string(code.name), {code.frame_rows.begin(), code.frame_rows.end()}});
  std::lock_guard lock(s.mutex);
  link(s, s.batches.emplace_back(std::move(batch)));
}

void gdb_jit_released(std::span<const code_events::ReleasedCode> ranges) {
  State& s = state();
  if (s.count.load(std::memory_order_relaxed) == 0) return;
  std::lock_guard lock(s.mutex);
  auto released = [&](const Function& f) {
    return std::any_of(ranges.begin(), ranges.end(),
                       [&](const auto& r) { return f.start >= r.address && f.start - r.address < r.size; });
  };
  for (auto it = s.batches.begin(); it != s.batches.end();) {
    if (std::none_of(it->functions.begin(), it->functions.end(), released)) {
      ++it;
      continue;
    }
    unlink(s, *it);
    std::erase_if(it->functions, released);
    if (it->functions.empty()) {
      it = s.batches.erase(it);
      continue;
    }
    link(s, *it);  // The survivors, in a new object.
    ++it;
  }
}

}  // namespace detail

void set_gdb_jit_enabled(bool on) noexcept { detail::state().enabled.store(on, std::memory_order_relaxed); }
bool gdb_jit_enabled() noexcept { return detail::state().enabled.load(std::memory_order_relaxed); }
std::size_t gdb_jit_object_count() noexcept { return detail::state().count.load(std::memory_order_relaxed); }

}  // namespace punch::runtime

namespace punch::runtime::code_events {

const Sink kGdbSink = {&detail::gdb_jit_added, &detail::gdb_jit_released};

}  // namespace punch::runtime::code_events
