// minivm values: one 64-bit word, tagged by its low bit.
//
// An integer n is stored as n << 1 (low bit 0), so tagged integers add,
// subtract and compare as they are; an object is its address | 1. Integers
// are 63-bit and wrap around, in both tiers alike.
#pragma once

#include <cstdint>

namespace minivm {

using Value = std::uint64_t;

struct Object;

constexpr Value from_int(std::int64_t n) { return static_cast<Value>(n) << 1; }
constexpr std::int64_t to_int(Value v) { return static_cast<std::int64_t>(v) >> 1; }
constexpr bool is_int(Value v) { return (v & 1) == 0; }
constexpr bool is_object(Value v) { return (v & 1) != 0; }
inline Value from_object(Object* o) { return reinterpret_cast<std::uintptr_t>(o) | 1; }
inline Object* to_object(Value v) { return reinterpret_cast<Object*>(v & ~Value{1}); }

// The smallest and largest integer a program can write as a constant.
constexpr std::int64_t kMinInt = -(std::int64_t{1} << 62);
constexpr std::int64_t kMaxInt = (std::int64_t{1} << 62) - 1;

}  // namespace minivm
