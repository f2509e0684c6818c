// How validation names a site in its errors: "site #2 at 0x7f...: reason".
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>

#include <punch/result.hpp>

namespace punch::patcher::live {

//! "site #2 at 0x7f..."
inline std::string site_name(std::size_t index, std::uintptr_t address) {
  return "site #" + std::to_string(index) + " at " + at(address);
}

// `e` about site #index: its message after the site's name, its address the
// site's unless it names a more precise one.
inline Error with_site(std::size_t index, std::uintptr_t address, Error e) {
  if (e.address == 0) e.address = address;
  return std::move(e).with_context(site_name(index, address));
}

// A byte as messages print it, like a disassembly's bytes: "0x0f".
inline std::string hex(std::uint8_t byte) {
  char buf[5];
  std::snprintf(buf, sizeof buf, "0x%02x", byte);
  return buf;
}

// An error about site #index: "site #2 at 0x7f...: message", with its address.
inline tl::unexpected<Error> site_error(ErrorCode code, std::size_t index, std::uintptr_t address,
                                        std::string message) {
  return fail(Error{code, site_name(index, address) + ": " + message, address});
}

}  // namespace punch::patcher::live
