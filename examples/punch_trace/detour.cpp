#include "detour.hpp"

#include <array>
#include <cstring>

#include <punch/runtime/code_heap.hpp>
#include <punch/runtime/sync.hpp>

namespace punch_trace {
namespace {

// Encoded by hand rather than with asmjit: Debian's libasmjit.a is not
// position-independent, so it cannot be linked into a shared object.
constexpr std::array<std::uint8_t, 31> kShape = {
    0xF3, 0x0F, 0x1E, 0xFA,                    // endbr64 (a chained hook may reach us indirectly)
    0x49, 0xBB, 0, 0, 0, 0, 0, 0, 0, 0,        // mov r11, &calls
    0xF0, 0x49, 0xFF, 0x03,                    // lock inc qword [r11]
    0x49, 0xBB, 0, 0, 0, 0, 0, 0, 0, 0,        // mov r11, &original
    0x41, 0xFF, 0x23,                          // jmp qword [r11]
};
constexpr std::size_t kCallsImmediate = 6;
constexpr std::size_t kOriginalImmediate = 20;

}  // namespace

punch::Result<void*> emit_detour(TracedFunction& fn) {
  auto heap = punch::runtime::CodeHeap::global();
  if (!heap) return tl::unexpected(heap.error());
  auto code = kShape;
  const auto calls = reinterpret_cast<std::uint64_t>(&fn.calls);
  const auto original = reinterpret_cast<std::uint64_t>(&fn.original);
  std::memcpy(&code[kCallsImmediate], &calls, sizeof calls);
  std::memcpy(&code[kOriginalImmediate], &original, sizeof original);
  auto address = (*heap)->allocate(code.size());
  if (!address) return tl::unexpected(address.error());
  if (auto s = (*heap)->writer().write(*address, code); !s) {
    (void)(*heap)->free(*address);
    return tl::unexpected(s.error());
  }
  // New code at an address no thread has run: one sync before anything can jump there.
  if (auto s = punch::runtime::sync_all_threads(); !s) return tl::unexpected(s.error());
  return reinterpret_cast<void*>(*address);
}

}  // namespace punch_trace
