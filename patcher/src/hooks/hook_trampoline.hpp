// punch::patcher hook code — trampolines, relays and link stubs in CodeHeap memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include <punch/result.hpp>
#include <punch/runtime/code_heap.hpp>

#include "hook_planner.hpp"

namespace punch::patcher::detail {

//! One CodeHeap allocation holding hook code.
struct CodeBlock {
  std::uintptr_t address = 0;
  std::size_t size = 0;
  bool contains(std::uintptr_t a) const noexcept { return a >= address && a < address + size; }
};

//! endbr64: every address a detour may call indirectly starts with it (IBT).
inline constexpr std::uint8_t kEndbr64[] = {0xF3, 0x0F, 0x1E, 0xFA};

//! Whether this thread runs with a user shadow stack (CET SHSTK, enabled by
//! glibc for programs built with -fcf-protection on a kernel and CPU that
//! support it): a `ret` must then match a real `call`.
bool shadow_stack_enabled() noexcept;

//! Builds and writes the trampoline of `plan`: endbr64, the stolen instructions
//! relocated (nothing for a patchable pad), and a jump back to plan.resume().
//! A stolen final call pushes the ORIGINAL return address and jumps (the
//! callee sees and returns to the original code), unless `real_final_call`:
//! then it stays a call whose return lands in the trampoline (for shadow stacks).
//! Placed within rel32 reach of the resume address and of every RIP-relative
//! data target when possible; otherwise anywhere the data still reaches (the
//! jump back then takes the absolute form). On error nothing stays allocated.
Result<CodeBlock> build_trampoline(const EntryPlan& plan, bool real_final_call, runtime::CodeHeap& heap);

//! Writes a relay `jmp [rip+0]; .quad to` that a jmp rel32 ending at
//! `jump_end` can reach. kOutOfMemory when no memory lies in reach.
Result<CodeBlock> build_relay(std::uintptr_t jump_end, std::uintptr_t to, runtime::CodeHeap& heap);

//! Writes a link stub `endbr64; jmp rel32 to` within rel32 reach of `to`: the
//! stable address a chained hook hands its detour; its jump is retargeted later.
Result<CodeBlock> build_link_stub(std::uintptr_t to, runtime::CodeHeap& heap);

//! Offset of the retargetable jmp rel32 inside a link stub.
inline constexpr std::size_t kLinkJumpOffset = sizeof(kEndbr64);

//! The absolute entry form that decodes as whole instructions (so a
//! transaction can validate it) and touches no register or stack:
//! `jmp [rip+2]; movabs rax, to` — the movabs is never executed, its immediate is the address.
std::vector<std::uint8_t> encode_absolute_entry(std::uintptr_t to);

}  // namespace punch::patcher::detail
