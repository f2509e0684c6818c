// punch::patcher patch points — single instructions a JIT emits on purpose to change later.
//
// A patch point is ONE instruction: a `call rel32` retargeted when its callee
// is recompiled, a `jmp rel32` guard switched with a 5-byte nop to deoptimize,
// a `jcc rel32` target, a `mov reg, imm` holding an inline cache's shape id or
// slot, a `lea/mov reg, [rip+disp32]` pointing at data. Because the old and
// the new code are each one instruction, a change never needs the thread
// fix-up round (whose cost grows with the number of threads), no out-of-line
// copy for most kinds (the trap handler carries out the old jmp, call, nop or
// load itself), and no hold of the other threads: see "Threads" below.
//
// Lifecycle:
//   1. emit with the emit_*_point helpers into an asmjit::x86::Assembler; each
//      returns a PatchPointMark (a label bound at the instruction);
//   2. add the code with runtime::Jit (pass code_window(marks) as the window
//      when rel32 kinds target code outside the JIT heap, see below);
//   3. resolve(mark, code, base) gives the PatchPoint (address and kind), checked;
//   4. change points with a PatchPointBatch (one transaction for many points,
//      shared syncs) or the single-point functions; again and again;
//   5. invalidate a function with invalidate_entry (its entry must have been
//      emitted with emit_patchable_entry), retire_code it, and free it with
//      free_retired_code once no thread runs it.
//
// Alignment: none is needed, and the emitters add none. No change relies on
// a multi-byte write being atomic (punch writes code with pwrite on
// /proc/self/mem, which promises no such thing): every change goes through
// the int3 protocol of Transaction, so a thread that reaches the point while
// it changes traps on its first byte and runs the old instruction in full or
// waits for the new one; it never executes a mix, whatever the alignment.
//
// Reach: call/jmp/jcc/rip-data points hold a rel32 displacement. A target
// more than ±2 GiB away cannot be encoded: emitting code whose targets are
// out of reach of where the code lands fails in Jit::add (asmjit's
// relocation); pass code_window(marks) to Jit::add so the code is placed
// where every target is in reach (CodeHeap allocates inside the window, or
// fails: kInvalidArgument when the window is empty, no place reaching every
// target, kOutOfMemory when it has no room), and an update to a target out of reach is refused
// with kOutOfRange naming the point and the target. For any target anywhere,
// use emit_far_call_point (`mov r11, imm64; call r11`): its point is the
// 10-byte move, retargeted with set_call_target like a `call rel32`.
//
// Threads: points are changed with TransactionOptions::hold_threads off by
// default (PatchPointOptions). The hold exists for threads that block SIGTRAP
// (a trap byte would kill them) and for vfork children; they run the
// program's code, never the VM's JIT code. So the VM's contract is: threads
// that run JIT code do not block SIGTRAP while they do (the default for
// every thread). Holding every thread costs a signal per thread per change;
// without it a change costs two membarrier syncs, whatever the thread count.
//
// Errors are values: bad input (a point that is not one, a target out of
// reach, a stale expected value, a point inside retired code) gets an error
// naming the address and the reason, and memory is left exactly as it was.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>

#include <asmjit/x86.h>

#include <punch/patcher/transaction.hpp>
#include <punch/result.hpp>
#include <punch/runtime/code_writer.hpp>
#include <punch/runtime/jit.hpp>

namespace punch::patcher {

//! What one patch point instruction is.
enum class PatchPointKind : std::uint8_t {
  kCall,     //!< `call rel32` (E8): set_call_target.
  kFarCall,  //!< `mov r64, imm64` followed by `call r64`: the point is the move; set_call_target, any address.
  kJump,     //!< `jmp rel32` (E9): set_jump_target.
  kGuard,    //!< `jmp rel32` <-> 5-byte nop (0F 1F 44 00 00): enable_guard / disable_guard / set_jump_target.
  kBranch,   //!< `jcc rel32` (0F 80+cc): set_jump_target (the condition stays).
  kImm32,    //!< `mov r32, imm32` (B8+r): set_imm32 (the register is zero-extended).
  kImm64,    //!< `mov r64, imm64` (REX.W B8+r): set_imm64.
  kRipData,  //!< `lea r64, [rip+disp32]` or `mov r64, [rip+disp32]`: set_data_address.
};

//! "call", "far-call", "jump", "guard", "branch", "imm32", "imm64", "rip-data".
std::string_view to_string(PatchPointKind kind) noexcept;

//! A patch point emitted into an asmjit holder, before the code has an address.
struct PatchPointMark {
  asmjit::Label label;  //!< Bound at the point's first byte.
  PatchPointKind kind = PatchPointKind::kCall;
  //! The absolute target a rel32 point was emitted with (0 for a disabled
  //! guard and for label targets, which stay inside the holder): code_window reads it.
  std::uintptr_t target = 0;
};

//! `RipData` forms.
enum class RipDataForm : std::uint8_t {
  kLea,   //!< lea r64, [rip+disp32]: the register gets the address.
  kLoad,  //!< mov r64, [rip+disp32]: the register gets the 8 bytes there.
};

// Emitters. Each emits exactly one instruction (two for the far call) at the
// assembler's cursor and binds a new label there. asmjit never shortens them:
// rel32 forms are emitted as such even when a shorter one would do. A target
// address is relocated by asmjit when the code is added (Jit::add).

//! `call rel32` to `target`.
PatchPointMark emit_call_point(asmjit::x86::Assembler& a, std::uintptr_t target);
//! `mov scratch, imm64; call scratch` (scratch: a 64-bit general register, r11 by default): any target.
PatchPointMark emit_far_call_point(asmjit::x86::Assembler& a, std::uintptr_t target,
                                   asmjit::x86::Gp scratch = asmjit::x86::r11);
//! `jmp rel32` to `target`, or to `target` (a label of the same holder).
PatchPointMark emit_jump_point(asmjit::x86::Assembler& a, std::uintptr_t target);
PatchPointMark emit_jump_point(asmjit::x86::Assembler& a, const asmjit::Label& target);
//! A guard: the 5-byte nop (disabled, falls through), or when `target` is
//! given, `jmp rel32` there (enabled).
PatchPointMark emit_guard_point(asmjit::x86::Assembler& a, std::optional<std::uintptr_t> target = std::nullopt);
PatchPointMark emit_guard_point(asmjit::x86::Assembler& a, const asmjit::Label& target);
//! `jcc rel32` (condition `cc`) to `target`.
PatchPointMark emit_branch_point(asmjit::x86::Assembler& a, asmjit::x86::CondCode cc, std::uintptr_t target);
PatchPointMark emit_branch_point(asmjit::x86::Assembler& a, asmjit::x86::CondCode cc, const asmjit::Label& target);
//! `mov r32, imm32` (B8+r). `reg` is any 32-bit general register but esp.
PatchPointMark emit_imm32_point(asmjit::x86::Assembler& a, asmjit::x86::Gp reg, std::uint32_t value);
//! `mov r64, imm64` (REX.W B8+r), always the 10-byte form. `reg`: any 64-bit general register but rsp.
PatchPointMark emit_imm64_point(asmjit::x86::Assembler& a, asmjit::x86::Gp reg, std::uint64_t value);
//! `lea reg, [rip+disp32]` / `mov reg, [rip+disp32]` with disp32 aiming at `data`.
PatchPointMark emit_rip_data_point(asmjit::x86::Assembler& a, asmjit::x86::Gp reg, std::uintptr_t data,
                                   RipDataForm form = RipDataForm::kLea);
//! The patchable entry invalidate_entry needs: a disabled guard (5-byte nop).
//! Emit it as the function's first instruction (the function's address is the point).
PatchPointMark emit_patchable_entry(asmjit::x86::Assembler& a);

//! The addresses where code holding `marks` may be placed so that every
//! absolute rel32 target is in reach (the whole address space when none has
//! one). Pass it to Jit::add. An empty window means no place reaches them all.
runtime::AddressWindow code_window(std::span<const PatchPointMark> marks) noexcept;

//! One patch point in code that has an address.
struct PatchPoint {
  std::uintptr_t address = 0;
  PatchPointKind kind = PatchPointKind::kCall;

  //! Checks that the bytes at `address` are a patch point of `kind` now
  //! (decoded with Zydis): kDecodeFailed or kBytesMismatch naming the address,
  //! what is there and what was expected otherwise; kNotMapped if unreadable.
  static Result<PatchPoint> check(std::uintptr_t address, PatchPointKind kind);

  //! What the point holds now (read and decoded; errors as check()):
  //! kCall, kFarCall, kJump, kBranch: the target; kGuard: the target, 0 when
  //! disabled; kImm32, kImm64: the value; kRipData: the data address.
  Result<std::uint64_t> current() const;
};

//! The point `mark` became in code `code` added at `base` (what Jit::add
//! returned), checked as PatchPoint::check does.
Result<PatchPoint> resolve(const PatchPointMark& mark, const asmjit::CodeHolder& code, const void* base);

//! The address of `label` in code `code` added at `base` (for guard and jump
//! targets inside the same function, e.g. a deopt path).
Result<std::uintptr_t> label_address(const asmjit::CodeHolder& code, const void* base, const asmjit::Label& label);

//! How changes to patch points are made.
struct PatchPointOptions {
  //! The transaction behind every change. Default: hold_threads off (see the
  //! top of this file), everything else as Transaction's defaults.
  TransactionOptions transaction = default_transaction();

  static TransactionOptions default_transaction() {
    TransactionOptions options;
    options.hold_threads = false;
    return options;
  }
};

//! Many patch point changes applied as one live transaction: all or nothing,
//! two syncs for the whole batch. Each add checks the point (its kind, a
//! target in reach, the expected current value, not in retired code) and
//! records the bytes it holds now; commit re-checks them under the
//! process-wide live lock, so a point changed by someone else meanwhile is
//! refused (kConflict), never overwritten. At most one change per point.
//! One object is used by one thread at a time.
class PatchPointBatch {
 public:
  explicit PatchPointBatch(PatchPointOptions options = {});
  ~PatchPointBatch();
  PatchPointBatch(PatchPointBatch&&) noexcept;
  PatchPointBatch& operator=(PatchPointBatch&&) noexcept;

  //! kCall, kFarCall: call `target`. `expected`: the target it must call now (kConflict otherwise).
  Status set_call_target(PatchPoint point, std::uintptr_t target, std::optional<std::uintptr_t> expected = {});
  //! kJump, kBranch, and kGuard (which it enables): jump to `target`.
  Status set_jump_target(PatchPoint point, std::uintptr_t target, std::optional<std::uintptr_t> expected = {});
  //! kGuard: jump to `target` (from disabled or enabled).
  Status enable_guard(PatchPoint point, std::uintptr_t target);
  //! kGuard: the 5-byte nop (falls through).
  Status disable_guard(PatchPoint point);
  //! kImm32: the new value. `expected`: the value it must hold now.
  Status set_imm32(PatchPoint point, std::uint32_t value, std::optional<std::uint32_t> expected = {});
  //! kImm64: the new value. `expected`: the value it must hold now.
  Status set_imm64(PatchPoint point, std::uint64_t value, std::optional<std::uint64_t> expected = {});
  //! kRipData: point the operand at `data`. `expected`: the address it must hold now.
  Status set_data_address(PatchPoint point, std::uintptr_t data, std::optional<std::uintptr_t> expected = {});

  //! Changes added so far.
  std::size_t size() const noexcept;
  //! Applies every change with the live protocol (all or nothing; memory as
  //! it was on error). An empty batch commits nothing. A batch commits once.
  Status commit();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Single-point conveniences: a batch of one, committed.
Status set_call_target(PatchPoint point, std::uintptr_t target, std::optional<std::uintptr_t> expected = {},
                       PatchPointOptions options = {});
Status set_jump_target(PatchPoint point, std::uintptr_t target, std::optional<std::uintptr_t> expected = {},
                       PatchPointOptions options = {});
Status enable_guard(PatchPoint point, std::uintptr_t target, PatchPointOptions options = {});
Status disable_guard(PatchPoint point, PatchPointOptions options = {});
Status set_imm32(PatchPoint point, std::uint32_t value, std::optional<std::uint32_t> expected = {},
                 PatchPointOptions options = {});
Status set_imm64(PatchPoint point, std::uint64_t value, std::optional<std::uint64_t> expected = {},
                 PatchPointOptions options = {});
Status set_data_address(PatchPoint point, std::uintptr_t data, std::optional<std::uintptr_t> expected = {},
                        PatchPointOptions options = {});

// Code invalidation.
//
// invalidate_entry makes every later call of `function` go to `stub` (a
// deopt or recompile stub, e.g. one that calls the interpreter or the new
// code): the function's patchable entry (emit_patchable_entry) becomes
// `jmp stub`, live, while threads run the function. Threads already past the
// entry run on in the old code; their frames, and return addresses into it,
// stay valid until the code is freed.
//
// retire_code then marks the function's allocation as being freed: from then
// on changes to patch points inside it are refused (kNotOwned naming the
// point). free_retired_code frees each retired allocation once
// runtime::ranges_in_use finds no thread executing inside it; the heap fills
// the space with int3 and syncs before handing it out again, so new code can
// reuse it. ranges_in_use sees where each thread IS (its rip), not return
// addresses deeper in its stack: a VM must retire code only when none of its
// frames can return into it (it knows its own frames: e.g. count activations,
// or walk its frames at a safepoint, or patch the return addresses of
// on-stack frames to a deopt continuation first). See docs/design.md.

//! `function`'s patchable entry becomes `jmp stub`. kBytesMismatch if the
//! entry is not a patch point (not emitted with emit_patchable_entry, or
//! already invalidated to another stub: then kConflict); kOutOfRange if the
//! stub is out of rel32 reach.
Status invalidate_entry(std::uintptr_t function, std::uintptr_t stub, PatchPointOptions options = {});

//! Marks the allocation of `jit` that starts at `function` as being freed
//! (kNotOwned if `jit`'s heap has no allocation there, kConflict if already retired).
Status retire_code(runtime::Jit& jit, const void* function);

//! Whether `address` lies in retired code (not yet freed).
bool is_retired(std::uintptr_t address);

//! What free_retired_code did.
struct RetiredCodeStats {
  std::size_t freed = 0;    //!< Allocations freed by this call.
  std::size_t waiting = 0;  //!< Retired allocations still waiting (some thread is inside).
};

//! Frees every retired allocation no thread is executing inside (one
//! ranges_in_use round for all of them). Call it every so often (a VM polls
//! it from its compiler thread or at safepoints).
Result<RetiredCodeStats> free_retired_code(std::chrono::milliseconds timeout = std::chrono::milliseconds(1000));

}  // namespace punch::patcher
