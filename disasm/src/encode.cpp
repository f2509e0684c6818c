// The jumps the patcher writes: jmp rel32 and the absolute jmp [rip+0] form.
#include <punch/disasm/relocate.hpp>

#include "encoding.hpp"

namespace punch::disasm {

Result<std::vector<std::uint8_t>> encode_jmp_rel32(std::uintptr_t from, std::uintptr_t to) {
  const auto bytes = jmp_rel32_bytes(from, to);
  if (!bytes) return fail(ErrorCode::kOutOfRange, from, "jmp rel32 cannot reach " + at(to) + " (more than 2 GiB away)");
  return std::vector<std::uint8_t>(bytes->begin(), bytes->end());
}

std::optional<std::array<std::uint8_t, 5>> jmp_rel32_bytes(std::uintptr_t from, std::uintptr_t to) {
  std::int32_t rel = 0;
  if (!detail::rel32_between(from + 5, to, rel)) return std::nullopt;
  const auto u = static_cast<std::uint32_t>(rel);
  return std::array<std::uint8_t, 5>{0xE9, static_cast<std::uint8_t>(u), static_cast<std::uint8_t>(u >> 8),
                                     static_cast<std::uint8_t>(u >> 16), static_cast<std::uint8_t>(u >> 24)};
}

std::vector<std::uint8_t> encode_jmp_absolute(std::uintptr_t to) {
  std::vector<std::uint8_t> out;
  out.reserve(14);
  detail::emit_jmp_absolute(out, to);
  return out;
}

}  // namespace punch::disasm
