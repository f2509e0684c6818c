// Names for the code punch writes (trampolines, relays, copies, stubs), so
// perf, gdb and crash reports show "punch:trampoline:puts", not an address.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <punch/runtime/code_kind.hpp>

namespace punch::patcher::detail {

//! "punch:<role>:<what target is>": what it is comes from the code registry
//! (JIT code), else the symbol holding it ("puts", "f+0x12"), else its
//! address ("punch:copy:0x401136").
std::string punch_code_name(std::string_view role, std::uintptr_t target);

//! Registers code punch just wrote at [address, address + size), made for
//! `target`, with every tool that names code (runtime::register_code). The
//! CodeHeap unregisters it when the space is freed.
void register_punch_code(std::uintptr_t address, std::size_t size, std::string_view role, std::uintptr_t target,
                         runtime::CodeKind kind);

}  // namespace punch::patcher::detail
