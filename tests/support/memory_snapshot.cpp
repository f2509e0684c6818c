#include "memory_snapshot.hpp"

#include <cstdio>
#include <cstring>

namespace punch::test {

MemorySnapshot::MemorySnapshot(std::uintptr_t address, std::size_t size) : address_(address), bytes_(size) {
  if (size) std::memcpy(bytes_.data(), reinterpret_cast<const void*>(address), size);
}

std::string MemorySnapshot::differences() const {
  const auto* now = reinterpret_cast<const std::uint8_t*>(address_);
  std::string out;
  int shown = 0;
  for (std::size_t i = 0; i < bytes_.size(); ++i) {
    if (now[i] == bytes_[i]) continue;
    if (++shown > 8) {
      out += " ...";
      break;
    }
    char line[64];
    std::snprintf(line, sizeof line, "%s+0x%zx: %02x -> %02x", out.empty() ? "" : ", ", i, bytes_[i], now[i]);
    out += line;
  }
  return out;
}

}  // namespace punch::test
