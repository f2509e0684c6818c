// A bounds-checked cursor over bytes that may be anything (files, unwind tables).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string_view>

namespace punch::runtime::detail {

class ByteReader {
 public:
  ByteReader(std::span<const std::uint8_t> bytes, std::size_t offset = 0) : bytes_(bytes), offset_(offset) {}

  std::size_t offset() const noexcept { return offset_; }
  std::size_t size() const noexcept { return bytes_.size(); }
  bool seek(std::size_t offset) noexcept {
    if (offset > bytes_.size()) return false;
    offset_ = offset;
    return true;
  }

  //! A little-endian trivially copyable value; nullopt (cursor unmoved) past the end.
  template <class T>
  std::optional<T> read() noexcept {
    if (offset_ > bytes_.size() || bytes_.size() - offset_ < sizeof(T)) return std::nullopt;
    T value;
    std::memcpy(&value, bytes_.data() + offset_, sizeof(T));
    offset_ += sizeof(T);
    return value;
  }

  std::optional<std::uint64_t> uleb128() noexcept {
    std::uint64_t value = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
      auto byte = read<std::uint8_t>();
      if (!byte) return std::nullopt;
      value |= std::uint64_t(*byte & 0x7f) << shift;
      if (!(*byte & 0x80)) return value;
    }
    return std::nullopt;  // Longer than 64 bits: malformed.
  }

  std::optional<std::int64_t> sleb128() noexcept {
    std::uint64_t value = 0;
    for (unsigned shift = 0; shift < 64;) {
      auto byte = read<std::uint8_t>();
      if (!byte) return std::nullopt;
      value |= std::uint64_t(*byte & 0x7f) << shift;
      shift += 7;
      if (!(*byte & 0x80)) {
        if (shift < 64 && (*byte & 0x40)) value |= ~std::uint64_t(0) << shift;  // Sign-extend.
        return static_cast<std::int64_t>(value);
      }
    }
    return std::nullopt;
  }

  //! A NUL-terminated string that ends inside the bytes.
  std::optional<std::string_view> c_string() noexcept {
    if (offset_ >= bytes_.size()) return std::nullopt;
    const auto* begin = bytes_.data() + offset_;
    const auto* nul = static_cast<const std::uint8_t*>(std::memchr(begin, 0, bytes_.size() - offset_));
    if (nul == nullptr) return std::nullopt;
    offset_ += static_cast<std::size_t>(nul - begin) + 1;
    return std::string_view(reinterpret_cast<const char*>(begin), static_cast<std::size_t>(nul - begin));
  }

 private:
  std::span<const std::uint8_t> bytes_;
  std::size_t offset_ = 0;
};

//! Whether [offset, offset + size) lies inside `total` bytes (no overflow).
constexpr bool fits(std::uint64_t offset, std::uint64_t size, std::uint64_t total) noexcept {
  return offset <= total && size <= total - offset;
}

}  // namespace punch::runtime::detail
