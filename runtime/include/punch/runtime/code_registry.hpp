// punch::runtime code registry — which generated code lives at an address.
//
// Every function added through Jit, and every piece of code punch itself
// writes (hook trampolines and relays, out-of-line copies, mid-hook stubs), is
// registered with its name, size and kind while it is live. find_code answers
// "what is at this address" without locks or allocation, so a crash handler or
// a sampling profiler's signal handler can call it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include <punch/runtime/code_kind.hpp>

namespace punch::runtime {

//! A live piece of registered code.
struct CodeInfo {
  static constexpr std::size_t kNameCapacity = 128;
  std::uintptr_t start = 0;
  std::size_t size = 0;
  CodeKind kind = CodeKind::kOther;
  char name[kNameCapacity] = {};  //!< NUL-terminated; a longer name is cut to kNameCapacity - 1 bytes.

  bool contains(std::uintptr_t address) const noexcept { return address - start < size; }
};

//! The registered code holding `address`: fills `out` and returns true, or returns false.
//! Async-signal-safe: no locks, no allocation, never blocks (a concurrent
//! register or release may or may not be seen; code released before the call
//! started never is).
bool find_code(std::uintptr_t address, CodeInfo& out) noexcept;

//! Every registered piece of code, sorted by start. Allocates: not for signal handlers.
std::vector<CodeInfo> registered_code();

//! Registers code written outside Jit (Jit registers its own), telling every
//! tool that names code (the registry, the perf map, jitdump): call it once
//! the bytes are written and synced ([start, start + size) must be mapped and
//! readable: jitdump copies it). An empty name becomes "code:0x<start>".
//! Registering over live entries replaces every entry it overlaps.
void register_code(std::uintptr_t start, std::size_t size, std::string_view name, CodeKind kind) noexcept;

//! Removes every entry that starts in [start, start + size) from the registry
//! and every tool; call it before the memory is freed or reused.
void unregister_code(std::uintptr_t start, std::size_t size) noexcept;

}  // namespace punch::runtime
