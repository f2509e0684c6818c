#include <punch/runtime/stack_walk.hpp>

#include <punch/runtime/safe_read.hpp>

#include "unwind_table.hpp"

namespace punch::runtime {
namespace {

constexpr std::uint8_t kRbp = 5;

bool read_word(std::uintptr_t address, std::uintptr_t& value) noexcept {
  if (address % sizeof(std::uintptr_t) != 0) return false;  // The ABI keeps stack slots aligned.
  std::uintptr_t word = 0;
  if (safe_read_some(address, std::span(reinterpret_cast<std::uint8_t*>(&word), sizeof word)) != sizeof word)
    return false;
  value = word;
  return true;
}

// `first_is_return`: pc is already a return address (the walk from the current frame).
std::size_t walk(std::uintptr_t pc, std::uintptr_t sp, std::uintptr_t fp, std::span<std::uintptr_t> out,
                 bool first_is_return) noexcept {
  std::size_t n = 0;
  bool first = !first_is_return;
  while (n < out.size() && pc != 0) {
    out[n++] = pc;
    // A return address points after its call: look it up one byte earlier, so
    // a call that ends a function is found in that function.
    const std::uintptr_t lookup = first ? pc : pc - 1;
    first = false;
    std::uintptr_t caller_pc = 0, caller_sp = 0, caller_fp = fp;
    detail::FrameRow row;
    std::uintptr_t start = 0;
    if (detail::unwind_table_find(lookup, row, start)) {
      const std::uintptr_t cfa = (row.cfa_on_rbp ? fp : sp) + static_cast<std::uintptr_t>(row.cfa_offset);
      if (!read_word(cfa - 8, caller_pc)) break;
      if (row.saved[kRbp] != 0 && !read_word(cfa - 8u * row.saved[kRbp], caller_fp)) break;
      caller_sp = cfa;
    } else {
      // The frame pointer chain: [fp] = caller's fp, [fp + 8] = return address.
      if (fp < sp) break;  // A frame pointer below the stack pointer is not one of this stack's frames.
      if (!read_word(fp, caller_fp) || !read_word(fp + 8, caller_pc)) break;
      caller_sp = fp + 16;
    }
    if (caller_sp <= sp) break;  // The stack grows down: each caller's frame is above.
    pc = caller_pc;
    sp = caller_sp;
    fp = caller_fp;
  }
  return n;
}

}  // namespace

std::size_t walk_stack(std::uintptr_t pc, std::uintptr_t sp, std::uintptr_t fp,
                       std::span<std::uintptr_t> out) noexcept {
  return walk(pc, sp, fp, out, false);
}

std::size_t walk_stack(const ucontext_t& context, std::span<std::uintptr_t> out) noexcept {
  const auto& r = context.uc_mcontext.gregs;
  return walk_stack(static_cast<std::uintptr_t>(r[REG_RIP]), static_cast<std::uintptr_t>(r[REG_RSP]),
                    static_cast<std::uintptr_t>(r[REG_RBP]), out);
}

[[gnu::noinline]] std::size_t walk_stack(std::span<std::uintptr_t> out) noexcept {
  // This function's own frame: its return address and the caller's frame pointer,
  // read from the frame this function builds (it is compiled with a frame pointer).
  const auto fp = reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0));
  const auto pc = reinterpret_cast<std::uintptr_t>(__builtin_return_address(0));
  std::uintptr_t caller_fp = 0;
  if (!read_word(fp, caller_fp)) return 0;
  return walk(pc, fp + 16, caller_fp, out, true);
}

}  // namespace punch::runtime
