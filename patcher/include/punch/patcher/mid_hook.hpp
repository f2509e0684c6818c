// punch::patcher::MidHook — hooks at any instruction inside a function, with the registers.
//
// A mid hook replaces the instructions at an address inside a function (the
// "stolen" bytes, as an entry hook does) with a jump to a stub punch
// generates. The stub saves the thread's registers into a MidContext, calls
// the detour with it, loads the (possibly changed) registers back and jumps
// to the stolen instructions' relocated copy, which jumps back after them:
//
//   void count_loop(punch::patcher::MidContext& ctx) { ctx.rax += 1; }
//   auto hook = MidHook::install(loop_head, count_loop);
//
// Install, enable, disable and remove are live Transactions, as for Hook; the
// same refusals apply (a branch into the stolen bytes, from the function or
// the whole object; instructions that cannot be relocated), plus an address
// that is not an instruction boundary of its function. Memory is then unchanged.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include <punch/disasm/validate.hpp>
#include <punch/patcher/hook.hpp>
#include <punch/patcher/transaction.hpp>
#include <punch/result.hpp>

namespace punch::patcher {

//! One 128-bit vector register, viewed as lanes (lane 0 is the low one: `f64[0]` of a scalar double).
union Xmm {
  std::uint8_t u8[16];
  std::uint32_t u32[4];
  std::uint64_t u64[2];
  float f32[4];
  double f64[2];
};

//! The registers of the thread that reached a mid hook, as the detour sees
//! them. Changes to the general registers, rflags and rsp take effect when
//! the detour returns; rip is information only.
struct MidContext {
  //! Arithmetic flags and DF take effect when changed (TF or AC at your own risk).
  std::uint64_t rflags;
  std::uint64_t rax, rcx, rdx, rbx;  //!< General registers, as the hooked code left them; changes take effect.
  //! The thread's stack pointer at the hooked instruction. A changed value is
  //! the one the code resumes with. The stub's frame begins 128 bytes below
  //! the original value (the red zone, left to the hooked code): never write below that.
  std::uint64_t rsp;
  std::uint64_t rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15;  //!< Likewise.
  //! The hooked instruction (after an endbr64 at the address). Read only:
  //! the thread always resumes with the hooked instruction's relocated copy.
  std::uint64_t rip;
  //! xmm0..xmm15, read and written back only with MidHookOptions::vector_registers
  //! (otherwise unspecified). The whole vector and x87 state is preserved
  //! either way (unless MidHookOptions::vector_state is off).
  Xmm xmm[16];
};

//! What a mid hook calls: an ordinary function taking the context. It runs on
//! the hooked thread's stack (below its red zone, aligned to 16) and must not throw.
using MidDetour = void (*)(MidContext& context);

//! Choices for MidHook::install.
struct MidHookOptions {
  //! Options of every transaction the hook commits (see HookOptions::transaction).
  TransactionOptions transaction{};
  //! The extent of the function holding the address, when no ELF symbol or
  //! unwind entry describes it (e.g. JIT code).
  std::optional<disasm::FunctionExtent> function{};
  //! Copy xmm0..xmm15 into MidContext::xmm and load them back after the detour.
  bool vector_registers = false;
  //! Save and restore the whole vector, mask and x87 state around the detour
  //! (xsave; most of a hook's cost). Turn off only when neither the detour nor
  //! anything it calls (memcpy, printf, ...) changes any xmm/ymm/zmm, k or x87
  //! register — except xmm0..15 with vector_registers on, which restores them.
  bool vector_state = true;
  //! Install enabled (otherwise enable() later redirects).
  bool enabled = true;
};

//! What an installed mid hook looks like.
struct MidHookInfo {
  std::uintptr_t address = 0;    //!< The address hooked.
  std::uintptr_t entry = 0;      //!< Where the jump lives (address, or after its endbr64); MidContext::rip.
  std::size_t stolen = 0;        //!< Bytes replaced at `entry`.
  std::uintptr_t stub = 0;       //!< The generated stub the jump leads to.
  std::uintptr_t relocated = 0;  //!< Where the thread resumes: the stolen instructions' copy (or the next hook inward).
};

//! An installed mid-function hook: a movable handle. Destroying an installed
//! hook removes it (errors are dropped there: call remove() to see them).
class MidHook {
 public:
  MidHook() noexcept = default;
  ~MidHook();
  MidHook(MidHook&& other) noexcept;
  MidHook& operator=(MidHook&& other) noexcept;
  MidHook(const MidHook&) = delete;
  MidHook& operator=(const MidHook&) = delete;

  //! Hooks the instruction at `address` so every thread reaching it calls `detour` first.
  //! Errors (memory unchanged): not an instruction boundary of its function,
  //! a branch into the stolen bytes, unprovable indirect jumps, unrelocatable
  //! instructions, bytes another hook replaced, a failed transaction.
  static Result<MidHook> install(void* address, MidDetour detour, MidHookOptions options = {});
  //! Hooks the instruction `offset` bytes into the function `symbol` names
  //! (see resolve_symbol); an offset past the function's end is refused.
  static Result<MidHook> install(const SymbolRef& symbol, std::size_t offset, MidDetour detour,
                                 MidHookOptions options = {});

  //! Redirects the address to the stub again (one transaction). No-op when enabled.
  Status enable();
  //! Lets threads run the original instructions (one transaction). No-op when disabled.
  Status disable();
  //! Removes the hook (one transaction); the last hook of an address restores
  //! its bytes exactly. The stub is freed by release_retired_hook_code once no
  //! thread runs it or the detour. Afterwards the handle is empty.
  Status remove();

  //! Whether the handle holds an installed hook.
  bool installed() const noexcept { return id_ != 0; }
  //! Whether threads reaching the address run the detour now.
  bool enabled() const noexcept;
  //! Where the hook lives (empty for an empty handle).
  MidHookInfo info() const noexcept;

 private:
  explicit MidHook(std::uint64_t id, std::uintptr_t stub) noexcept : id_(id), stub_(stub) {}
  std::uint64_t id_ = 0;
  std::uintptr_t stub_ = 0;
};

}  // namespace punch::patcher
