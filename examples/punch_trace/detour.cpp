#include "detour.hpp"

#include <array>
#include <span>
#include <cstring>
#include <vector>

#include <punch/runtime/code_heap.hpp>
#include <punch/runtime/code_registry.hpp>
#include <punch/runtime/sync.hpp>

namespace punch_trace {
namespace {

// Encoded by hand rather than with asmjit: Debian's libasmjit.a is not
// position-independent, so it cannot be linked into a shared object.
// clang-format off
constexpr std::array<std::uint8_t, 31> kCounting = {
    0xF3, 0x0F, 0x1E, 0xFA,                    // endbr64 (a chained hook may reach us indirectly)
    0x49, 0xBB, 0, 0, 0, 0, 0, 0, 0, 0,        // mov r11, &calls
    0xF0, 0x49, 0xFF, 0x03,                    // lock inc qword [r11]
    0x49, 0xBB, 0, 0, 0, 0, 0, 0, 0, 0,        // mov r11, &original
    0x41, 0xFF, 0x23,                          // jmp qword [r11]
};
// clang-format on

// At entry rsp is 8 past a multiple of 16; 24 bytes down it is aligned for the call.
// [rsp] the start time, [rsp+8] and [rsp+16] rdx and rax (arguments, then results).
// clang-format off
constexpr std::array<std::uint8_t, 120> kTimed = {
    0xF3, 0x0F, 0x1E, 0xFA,                    // endbr64
    0x48, 0x83, 0xEC, 0x18,                    // sub rsp, 24
    0x48, 0x89, 0x54, 0x24, 0x08,              // mov [rsp+8], rdx     (the third argument)
    0x48, 0x89, 0x44, 0x24, 0x10,              // mov [rsp+16], rax    (al: a varargs call's count)
    0x0F, 0x31,                                // rdtsc
    0x48, 0xC1, 0xE2, 0x20,                    // shl rdx, 32
    0x48, 0x09, 0xD0,                          // or rax, rdx
    0x48, 0x89, 0x04, 0x24,                    // mov [rsp], rax
    0x48, 0x8B, 0x54, 0x24, 0x08,              // mov rdx, [rsp+8]
    0x48, 0x8B, 0x44, 0x24, 0x10,              // mov rax, [rsp+16]
    0x49, 0xBB, 0, 0, 0, 0, 0, 0, 0, 0,        // mov r11, &calls
    0xF0, 0x49, 0xFF, 0x03,                    // lock inc qword [r11]
    0x49, 0xBB, 0, 0, 0, 0, 0, 0, 0, 0,        // mov r11, &original
    0x41, 0xFF, 0x13,                          // call qword [r11]
    0x48, 0x89, 0x44, 0x24, 0x08,              // mov [rsp+8], rax     (the results)
    0x48, 0x89, 0x54, 0x24, 0x10,              // mov [rsp+16], rdx
    0x0F, 0x31,                                // rdtsc
    0x48, 0xC1, 0xE2, 0x20,                    // shl rdx, 32
    0x48, 0x09, 0xD0,                          // or rax, rdx
    0x48, 0x2B, 0x04, 0x24,                    // sub rax, [rsp]
    0x49, 0xBB, 0, 0, 0, 0, 0, 0, 0, 0,        // mov r11, &ticks
    0xF0, 0x49, 0x01, 0x03,                    // lock add [r11], rax
    0x48, 0x8B, 0x44, 0x24, 0x08,              // mov rax, [rsp+8]
    0x48, 0x8B, 0x54, 0x24, 0x10,              // mov rdx, [rsp+16]
    0x48, 0x83, 0xC4, 0x18,                    // add rsp, 24
    0xC3,                                      // ret
};
// clang-format on

// A detour's bytes and where its three immediates go (ticks: none when 0).
struct Shape {
  std::span<const std::uint8_t> bytes;
  std::size_t calls, original, ticks;
};
constexpr Shape kCountingShape{kCounting, 6, 20, 0};
constexpr Shape kTimedShape{kTimed, 43, 57, 93};

void put(std::uint8_t* code, std::size_t offset, const void* address) {
  const auto value = reinterpret_cast<std::uint64_t>(address);
  std::memcpy(code + offset, &value, sizeof value);
}

}  // namespace

punch::Status emit_detours(std::span<TracedFunction* const> functions) {
  if (functions.empty()) return {};
  auto heap = punch::runtime::CodeHeap::global();
  if (!heap) return tl::unexpected(heap.error());
  std::vector<std::size_t> sizes;
  for (const TracedFunction* fn : functions) sizes.push_back((fn->timed ? kTimedShape : kCountingShape).bytes.size());
  auto addresses = (*heap)->allocate_run(sizes, 16);
  if (!addresses) return tl::unexpected(addresses.error());
  const std::uintptr_t base = addresses->front();
  std::vector<std::uint8_t> staging(addresses->back() + sizes.back() - base, 0xCC);
  for (std::size_t i = 0; i < functions.size(); ++i) {
    const TracedFunction& fn = *functions[i];
    const Shape& shape = fn.timed ? kTimedShape : kCountingShape;
    std::uint8_t* code = &staging[(*addresses)[i] - base];
    std::memcpy(code, shape.bytes.data(), shape.bytes.size());
    put(code, shape.calls, &fn.calls);
    put(code, shape.original, &fn.original);
    if (shape.ticks != 0) put(code, shape.ticks, &fn.ticks);
  }
  if (auto s = (*heap)->writer().write(base, staging); !s) {
    (void)(*heap)->free_batch(*addresses);
    return s;
  }
  // New code at addresses no thread has run: one sync before anything can jump there.
  if (auto s = punch::runtime::sync_all_threads(); !s) return s;
  for (std::size_t i = 0; i < functions.size(); ++i) {
    functions[i]->detour = reinterpret_cast<void*>((*addresses)[i]);
    // perf and crash reports show "punch_trace:detour:write", not an address.
    punch::runtime::register_code((*addresses)[i], sizes[i], "punch_trace:detour:" + functions[i]->spec,
                                  punch::runtime::CodeKind::kDetour);
  }
  return {};
}

}  // namespace punch_trace
