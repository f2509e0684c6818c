// minivm's run-time state: per thread, per function, per global, per code
// version, and the counters that show which patch paths ran.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bytecode.hpp"
#include "shapes.hpp"
#include "value.hpp"

namespace minivm {

class Vm;
struct ThreadState;
struct FunctionState;
struct CodeVersion;

//! What JIT code reads of its thread (plain layout, fixed offsets).
struct JitThread {
  Value* stack_limit = nullptr;  // A callee's registers must start below this.
  std::uint8_t error = 0;        // Set when the run failed; JIT code returns at once.
  ThreadState* owner = nullptr;
};

//! One thread running programs of a VM.
struct ThreadState {
  explicit ThreadState(Vm& vm);
  ~ThreadState();
  ThreadState(const ThreadState&) = delete;
  ThreadState& operator=(const ThreadState&) = delete;
  Vm& vm;
  JitThread jit;
  std::vector<Value> stack;  // Registers of every frame, callers first: 16 Ki values, at most 1 Ki calls deep.
  ObjectArena objects;
  std::string error_message;
  // Quiescent-state reclamation: code retired at epoch E is freed once every
  // thread is outside a run or entered it at epoch >= E.
  std::atomic<bool> running{false};
  std::atomic<std::uint64_t> entered_epoch{0};

  void fail(std::string message) {
    if (!jit.error) error_message = std::move(message);
    jit.error = 1;
  }
};

//! An inline cache of one get or set in one code version: up to kWays ways,
//! each one patchable `mov rcx, imm64` holding a shape id (low half) and the
//! slot's offset (high half), so a way changes in one instruction and no
//! thread can see a shape id with another shape's offset.
struct InlineCache {
  static constexpr int kWays = 4;
  static std::uint64_t way_value(std::uint32_t shape, std::int32_t offset) {
    return shape | std::uint64_t{static_cast<std::uint32_t>(offset)} << 32;
  }
  int name = 0;
  std::uintptr_t site[kWays] = {};
  std::uint64_t way[kWays] = {};  // What each way's immediate holds; 0 (shape 0) never matches.
  std::atomic<int> used{0};       // Filled ways (the first is the monomorphic state); grows under the patch lock.
  CodeVersion* owner = nullptr;
};

struct CallSite {
  FunctionState* callee = nullptr;
  std::uintptr_t site = 0;
  std::uintptr_t target = 0;  // What the call points at now.
  CodeVersion* owner = nullptr;
};

//! A guard: a loop head's (tripped when its version is invalidated) or a
//! global read's (the code after it used the global's value as a constant).
struct GuardSite {
  int global = -1;  // -1: a loop head.
  std::uintptr_t site = 0;
  std::uintptr_t exit = 0;
  bool tripped = false;
  CodeVersion* owner = nullptr;
};

//! One compiled copy of a function.
struct CodeVersion {
  FunctionState* function = nullptr;
  std::uintptr_t begin = 0;  // Its first instruction is a guard: tripped, it jumps to the interpreter stub.
  bool retired = false;
  std::uint64_t retired_epoch = 0;
  std::vector<std::unique_ptr<InlineCache>> caches;
  std::vector<std::unique_ptr<CallSite>> calls;
  std::vector<std::unique_ptr<GuardSite>> guards;
};

struct FunctionState {
  const Function* code = nullptr;
  int index = 0;
  std::atomic<void*> entry{nullptr};  // JIT code to call, or null: interpret.
  std::uintptr_t stub = 0;            // Native entry that runs the interpreter.
  std::atomic<std::uint32_t> calls{0};
  CodeVersion* current = nullptr;  // Under the VM's patch lock, like the rest below.
  std::vector<CallSite*> callers;  // Call sites of live versions that call this function.
};

struct GlobalState {
  std::atomic<Value> value{0};
  int changes = 0;                 // Writes that changed the value (under the patch lock).
  std::vector<GuardSite*> guards;  // Of live versions that folded the value in.
  //! Compiled code folds the value in while it has rarely changed; after that, it loads it.
  bool foldable() const { return changes < 2; }
};

//! What the JIT's patch paths did, for the driver's last line and the tests.
struct Counters {
  std::atomic<std::uint64_t> compiles{0};             // Code versions made.
  std::atomic<std::uint64_t> ic_patches{0};           // Inline-cache immediates written (two per way filled).
  std::atomic<std::uint64_t> call_retargets{0};       // Call sites pointed at a new target.
  std::atomic<std::uint64_t> guards_tripped{0};       // Loop-head and global guards turned into exits.
  std::atomic<std::uint64_t> entries_invalidated{0};  // Version entries sent to the interpreter stub.
  std::atomic<std::uint64_t> deopts{0};               // Exits taken: the interpreter finished a JIT frame.
  std::atomic<std::uint64_t> versions_freed{0};       // Retired versions whose code punch freed.
};

}  // namespace minivm
