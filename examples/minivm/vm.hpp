// minivm::Vm — one loaded program, its two tiers, and the code versions the
// JIT made of it.
//
// Threads run the program at once (each with its own ThreadState and
// objects); shapes, globals, feedback and JIT code are shared. Every change
// to JIT code (compiling, inline-cache updates, retargeting calls, tripping
// guards, retiring versions) happens under one patch lock.
#pragma once

#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <punch/result.hpp>
#include <punch/runtime/code_heap.hpp>
#include <punch/runtime/jit.hpp>

#include "runtime_state.hpp"

namespace minivm {

enum class Tier {
  kInterpreter,  // Never compile.
  kTiered,       // Compile a function once it has been called `hot_calls` times.
  kEager,        // Compile every function at its first call.
};

//! "42", or "object" for an object.
std::string describe(Value v);

class Vm {
 public:
  static punch::Result<std::unique_ptr<Vm>> create(Program program, Tier tier, std::uint32_t hot_calls = 2);
  ~Vm();  //!< Frees all code: no thread may run the program any more.
  Vm(const Vm&) = delete;
  Vm& operator=(const Vm&) = delete;

  //! Runs `main` once on `thread` (which must be this VM's).
  punch::Result<Value> run(ThreadState& thread);

  const Program& program() const { return program_; }
  ShapeTable& shapes() { return shapes_; }
  Counters& counters() { return counters_; }
  FunctionState& function(int index) { return functions_[index]; }
  //! The function called `name`, or null.
  FunctionState* find_function(std::string_view name);
  std::size_t function_count() const { return functions_.size(); }
  Tier tier() const { return tier_; }

  // ---- For the tiers (interpreter.cpp, jit_helpers.cpp) ----
  //! Calls `f` with its registers at `regs` (arguments in place), in whichever tier it is.
  Value call(ThreadState& t, FunctionState& f, Value* regs);
  //! Interprets `f` from its start (counting the call, compiling it when hot).
  Value call_interpreted(ThreadState& t, FunctionState& f, Value* regs);
  Value read_global(int g) const { return globals_[g].value.load(std::memory_order_acquire); }
  //! Writes a global. A new value invalidates the code that folded the old one in.
  void write_global(ThreadState& t, int g, Value v);
  GlobalState& global(int g) { return globals_[g]; }
  Value get_property(Value object, int name) const;
  void set_property(ThreadState& t, Value object, int name, Value v);

  // ---- Inline caches (inline_cache.cpp) ----
  //! A get/set that no way of `cache` matched: does it, then fills a free way.
  Value get_miss(InlineCache& cache, Value object);
  void set_miss(ThreadState& t, InlineCache& cache, Value object, Value v);

  // ---- Code versions (code_versions.cpp) ----
  //! Compiles `f` again (or for the first time), points its callers at the new
  //! code and retires the old version.
  punch::Status compile(FunctionState& f);
  //! Invalidates `f`'s code: threads inside it leave for the interpreter at
  //! their next guard, callers call the interpreter, and `f` tiers up again
  //! when hot. Does nothing to a function that has no code.
  punch::Status invalidate(FunctionState& f);
  //! Frees retired versions that no thread can be running; returns how many are left.
  std::size_t reclaim();
  //! Pre-registers a thread for reclamation (ThreadState does it).
  void add_thread(ThreadState* t);
  void remove_thread(ThreadState* t);

 private:
  Vm(Program program, Tier tier, std::uint32_t hot_calls, punch::runtime::CodeHeap& heap);
  punch::Status make_stubs();
  punch::Status compile_locked(FunctionState& f);
  punch::Status point_callers_at(FunctionState& f, std::uintptr_t target);
  punch::Status invalidate_locked(CodeVersion& version);
  void retire_locked(CodeVersion& version, bool entry_tripped);
  void register_sites_locked(CodeVersion& version);
  void tier_up(FunctionState& f);

  Program program_;
  Tier tier_;
  std::uint32_t hot_calls_;
  punch::runtime::Jit jit_;
  ShapeTable shapes_;
  std::deque<FunctionState> functions_;
  std::deque<GlobalState> globals_;
  Counters counters_;

  std::mutex patch_mutex_;
  std::vector<std::unique_ptr<CodeVersion>> versions_;  // Live and retired, under patch_mutex_.
  std::vector<void*> stubs_;
  std::atomic<std::uint64_t> epoch_{1};
  std::mutex threads_mutex_;
  std::vector<ThreadState*> threads_;
};

}  // namespace minivm
