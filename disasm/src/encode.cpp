// The jumps the patcher writes: jmp rel32 and the absolute jmp [rip+0] form.
#include <punch/disasm/relocate.hpp>

#include "encoding.hpp"

namespace punch::disasm {

Result<std::vector<std::uint8_t>> encode_jmp_rel32(std::uintptr_t from, std::uintptr_t to) {
  std::int32_t rel = 0;
  if (!detail::rel32_between(from + 5, to, rel))
    return fail(ErrorCode::kOutOfRange, at(from) + ": jmp rel32 cannot reach " + at(to) + " (more than 2 GiB away)");
  std::vector<std::uint8_t> out;
  out.reserve(5);  // One allocation: hooks and patches ask for this on every retarget.
  detail::emit_jmp_rel32(out, rel);
  return out;
}

std::vector<std::uint8_t> encode_jmp_absolute(std::uintptr_t to) {
  std::vector<std::uint8_t> out;
  out.reserve(14);
  detail::emit_jmp_absolute(out, to);
  return out;
}

}  // namespace punch::disasm
