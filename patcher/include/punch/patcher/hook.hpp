// punch::patcher::Hook — inline hooks with trampolines, safe while the target runs.
//
// A hook redirects a function's entry to a detour. The detour calls the
// original behaviour through `trampoline()`: the instructions the entry jump
// displaced ("stolen"), relocated into CodeHeap memory near the target, then
// a jump back. Install, enable, disable and remove are each one live
// Transaction, so threads running the function at that moment are safe.
//
// Entry forms, in order of preference:
//  * patchable entry: a nop pad at the entry (-fpatchable-function-entry=N,
//    N >= 5, or -mfentry -mnop-mcount) is replaced by the jump; nothing is stolen;
//  * `jmp rel32` (5 bytes) after a leading endbr64, which stays in place;
//  * `jmp [rip+2]; movabs rax, to` (16 bytes; the movabs never runs, no register,
//    no stack) when no memory lies within rel32 reach of the target and the
//    stolen bytes allow it. Needs no memory near the target at all.
// Trampolines and relays begin with endbr64 where an indirect call may land; no push/ret.
// A stolen call that ends the stolen bytes pushes the original return address
// and jumps, so the callee sees the caller it would see unhooked (a real call
// under a shadow stack, whose `ret` must match one).
//
// Chaining: hooking a function that punch already hooked wraps the existing
// hook (detour2 -> detour1 -> original); hooks are removed in any order.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>

#include <punch/disasm/validate.hpp>
#include <punch/patcher/transaction.hpp>
#include <punch/result.hpp>

namespace punch::patcher {

//! How the entry of a hooked function is redirected.
enum class HookEntryKind {
  kPatchableEntry,  //!< A nop pad at the entry is replaced; no instruction is stolen.
  kStolenRel32,     //!< `jmp rel32` over stolen instructions (after endbr64 if any).
  kStolenAbsolute,  //!< `jmp [rip+2]; movabs rax, to` over at least 16 stolen bytes (no near memory).
};

//! "patchable-entry", "stolen-rel32" or "stolen-absolute".
std::string_view to_string(HookEntryKind kind) noexcept;

//! Choices for Hook::install.
struct HookOptions {
  //! Options of every transaction the hook commits (trap byte, thread timeout,
  //! allow_unprovable: hook functions whose indirect jumps cannot be proven safe).
  TransactionOptions transaction{};
  //! The extent of the target function, when no ELF symbol describes it
  //! (e.g. JIT code). Used to refuse branches into the stolen bytes.
  std::optional<disasm::FunctionExtent> function{};
  //! Use a patchable entry pad when one is found (the cheapest, safest form).
  bool prefer_patchable_entry = true;
  //! Allow the 16-byte absolute entry when no memory lies within rel32 reach.
  bool allow_absolute_entry = true;
  //! Force the 16-byte absolute entry (for tests and hosts with a crowded address space).
  bool force_absolute_entry = false;
  //! Install enabled (otherwise install() prepares everything and enable() later redirects).
  bool enabled = true;
};

//! A function to find by name in the loaded objects.
struct SymbolRef {
  std::string name;     //!< "puts".
  std::string version;  //!< "" for dlsym, else a version for dlvsym ("GLIBC_2.2.5").
  //! "" to search every loaded object (RTLD_DEFAULT), else a loaded object's
  //! name as dlopen knows it ("libc.so.6"); it is never loaded by the lookup.
  std::string object;
};

//! Resolves a symbol to the address a call through the dynamic linker reaches.
//! For an IFUNC (glibc's strlen, memcpy, ...) that is the implementation the
//! resolver picked for this CPU (e.g. __strlen_avx2), which is what gets hooked.
//! A PLT stub (a non-PIE program's canonical address) is looked behind: the
//! definition in another object is returned. A name no dynamic symbol table
//! has (no -rdynamic) is looked up in the .symtab of the loaded files (a global
//! function, else the one static function of that name); no version then.
Result<void*> resolve_symbol(const SymbolRef& symbol);

//! What an installed hook looks like.
struct HookInfo {
  std::uintptr_t target = 0;  //!< The function hooked.
  std::uintptr_t entry = 0;   //!< Where the entry jump lives (target, or after its endbr64).
  HookEntryKind kind = HookEntryKind::kStolenRel32;
  std::size_t stolen = 0;          //!< Bytes replaced at `entry` (the pad size for patchable entries).
  std::uintptr_t trampoline = 0;   //!< What trampoline() returns.
  std::size_t chain_position = 0;  //!< 0 for the innermost hook of the target, 1 for the one wrapping it, ...
};

//! An installed inline hook: a movable handle. Destroying an installed hook
//! removes it (errors are dropped there: call remove() to see them).
class Hook {
 public:
  Hook() noexcept = default;
  ~Hook();
  Hook(Hook&& other) noexcept;
  Hook& operator=(Hook&& other) noexcept;
  Hook(const Hook&) = delete;
  Hook& operator=(const Hook&) = delete;

  //! Hooks `target` so its callers reach `detour`, and stores the address to
  //! call for the original behaviour (trampoline()) into `*original` BEFORE
  //! any call is redirected (a release store): a detour that calls through
  //! `*original` never finds it unset, even when other threads call `target`
  //! during the install. On failure `*original` gets its old value back (but
  //! for `inconsistent`, when the entry may still lead to the detour).
  //!
  //!   static int (*real_puts)(const char*);
  //!   int my_puts(const char* s) { return real_puts(s); }
  //!   auto hook = Hook::install(puts, my_puts, &real_puts);
  //!
  //! When `target` is already hooked by punch, the new hook wraps the existing
  //! ones. Errors (memory unchanged): branch into the stolen bytes, unprovable
  //! indirect jumps, a function shorter than the jump not followed by padding,
  //! a call that is not the last stolen instruction, unrelocatable
  //! instructions, no memory in reach, a failed transaction. With
  //! `options.enabled = false` nothing is redirected yet, and every check
  //! enable() would make is made now: a hook that installs can be enabled.
  //! F is taken from `original` alone, so a `noexcept` target (strlen) converts.
  template <class F>
  requires std::is_function_v<F>
  static Result<Hook> install(std::type_identity_t<F>* target, std::type_identity_t<F>* detour, F** original,
                              HookOptions options = {}) {
    return install(reinterpret_cast<void*>(target), reinterpret_cast<void*>(detour), reinterpret_cast<void**>(original),
                   options);
  }
  static Result<Hook> install(void* target, void* detour, void** original, HookOptions options = {});

  //! Hooks the function `symbol` names (see resolve_symbol), publishing the original as above.
  template <class F>
  requires std::is_function_v<F>
  static Result<Hook> install(const SymbolRef& symbol, std::type_identity_t<F>* detour, F** original,
                              HookOptions options = {}) {
    return install(symbol, reinterpret_cast<void*>(detour), reinterpret_cast<void**>(original), options);
  }
  static Result<Hook> install(const SymbolRef& symbol, void* detour, void** original, HookOptions options = {});

  //! The forms without `original`: read it afterwards with trampoline() or
  //! original<Fn>(). Install with `options.enabled = false`, store it where
  //! the detour reads it, then enable() — or a thread may reach the detour
  //! before it is stored. (Also the way to enable a batch of hooks later.)
  static Result<Hook> install(void* target, void* detour, HookOptions options = {});
  static Result<Hook> install(const SymbolRef& symbol, void* detour, HookOptions options = {});

  //! Redirects the function to the detour again (one transaction). No-op when enabled.
  Status enable();
  //! Lets calls skip this detour (one transaction); the hook stays installed. No-op when disabled.
  Status disable();
  //! Removes the hook (one transaction). The last hook of a target restores
  //! its original bytes exactly. Afterwards the handle is empty.
  Status remove();

  bool installed() const noexcept { return id_ != 0; }
  bool enabled() const noexcept;

  //! The address to call for the original behaviour (the next hook inward
  //! when chained). Stable for the life of the hook; begins with endbr64.
  void* trampoline() const noexcept;

  //! trampoline() as a function pointer: `auto orig = hook.original<int (*)(int)>();`
  template <class Fn>
  Fn original() const noexcept {
    return reinterpret_cast<Fn>(trampoline());
  }

  HookInfo info() const noexcept;

 private:
  explicit Hook(std::uint64_t id) noexcept : id_(id) {}
  std::uint64_t id_ = 0;
};

//! Frees trampolines, relays and link stubs of removed hooks once one
//! rendezvous (runtime::ranges_in_use) shows no thread can still run them:
//! a block is kept while some thread's rip lies inside it, or inside the
//! DETOUR of a hook that used it when the detour's extent is known (a symbol or FDE: a
//! thread there may have loaded the trampoline pointer and be about to call
//! it), or when a thread that did not answer cannot be proven blocked
//! elsewhere. A stolen call pushes the original return address and jumps, so
//! no return address points into a trampoline — except under a shadow stack,
//! where it stays a real call and such trampolines are never freed.
//!
//! What stays the caller's promise: no code calls a removed hook's
//! trampoline() later through a pointer saved elsewhere (a global the detour
//! reads, a copy another thread holds), and no thread is inside a function the
//! detour called on its way to the trampoline (only the innermost frame is
//! seen), nor inside a detour without a known extent (JIT code, assembly
//! without CFI). Returns how many blocks were freed; the rest stay retired.
Result<std::size_t> release_retired_hook_code(std::chrono::milliseconds timeout = std::chrono::milliseconds(1000));

}  // namespace punch::patcher
