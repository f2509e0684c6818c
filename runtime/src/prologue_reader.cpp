#include "prologue_reader.hpp"

namespace punch::runtime::detail {

FrameDescription describe_copied_prologue(std::span<const std::uint8_t> code) {
  FrameDescription d;
  (void)PrologReader(code, 0, d.steps).read(false);  // A prologue read never fails: it stops at what it does not know.
  return d;
}

}  // namespace punch::runtime::detail
