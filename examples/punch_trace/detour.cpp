#include "detour.hpp"

#include <array>
#include <cstring>
#include <vector>

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

punch::Status emit_detours(std::span<TracedFunction* const> functions) {
  if (functions.empty()) return {};
  auto heap = punch::runtime::CodeHeap::global();
  if (!heap) return tl::unexpected(heap.error());
  const std::vector<std::size_t> sizes(functions.size(), kShape.size());
  auto addresses = (*heap)->allocate_run(sizes, 16);
  if (!addresses) return tl::unexpected(addresses.error());
  const std::uintptr_t base = addresses->front();
  std::vector<std::uint8_t> staging(addresses->back() + kShape.size() - base, 0xCC);
  for (std::size_t i = 0; i < functions.size(); ++i) {
    std::uint8_t* code = &staging[(*addresses)[i] - base];
    const auto calls = reinterpret_cast<std::uint64_t>(&functions[i]->calls);
    const auto original = reinterpret_cast<std::uint64_t>(&functions[i]->original);
    std::memcpy(code, kShape.data(), kShape.size());
    std::memcpy(code + kCallsImmediate, &calls, sizeof calls);
    std::memcpy(code + kOriginalImmediate, &original, sizeof original);
  }
  if (auto s = (*heap)->writer().write(base, staging); !s) {
    (void)(*heap)->free_batch(*addresses);
    return s;
  }
  // New code at addresses no thread has run: one sync before anything can jump there.
  if (auto s = punch::runtime::sync_all_threads(); !s) return s;
  for (std::size_t i = 0; i < functions.size(); ++i) functions[i]->detour = reinterpret_cast<void*>((*addresses)[i]);
  return {};
}

}  // namespace punch_trace
