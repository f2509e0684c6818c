// A page of test code at a chosen address, mapped the way MDWE allows.
#pragma once

#include <cstdint>
#include <span>

namespace punch::test {

//! Maps `code` (at most a page) read+execute over the page at `page`
//! (MAP_FIXED), from a memfd: no page gains PROT_EXEC later, which MDWE
//! (PR_SET_MDWE) would refuse. The rest of the page is zero. False on failure.
bool map_code_at(std::uintptr_t page, std::span<const std::uint8_t> code);

}  // namespace punch::test
