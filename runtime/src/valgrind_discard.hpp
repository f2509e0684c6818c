// Valgrind runs a program from its own translations of the code, and does
// not see bytes written through /proc/self/mem or through a second mapping:
// without being told, it keeps running the old code. Every write of code
// tells it to drop its translations of the range. Outside valgrind the
// client request is a few register rotations that do nothing.
#pragma once

#include <cstddef>
#include <cstdint>

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define PUNCH_HAS_VALGRIND_H 1
#endif

namespace punch::runtime::detail {

inline void discard_stale_translations(std::uintptr_t address, std::size_t size) noexcept {
#ifdef PUNCH_HAS_VALGRIND_H
  VALGRIND_DISCARD_TRANSLATIONS(address, size);
#else
  (void)address;
  (void)size;
#endif
}

}  // namespace punch::runtime::detail
