// The extent of the function holding an address, as the patcher's checks take it.
#pragma once

#include <cstdint>

#include <punch/disasm/validate.hpp>
#include <punch/result.hpp>
#include <punch/runtime/function_bounds.hpp>

namespace punch::patcher::detail {

//! runtime::function_containing (dynamic symbols, .symtab, unwind tables) as a FunctionExtent.
inline Result<disasm::FunctionExtent> function_extent(std::uintptr_t address) {
  auto bounds = runtime::function_containing(address);
  if (!bounds) return tl::unexpected(std::move(bounds).error());
  return disasm::FunctionExtent{bounds->start, bounds->end, disasm::FunctionExtent::Source::kSymbol};
}

}  // namespace punch::patcher::detail
