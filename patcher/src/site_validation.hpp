// Validation of patch sites against the code as it is now (invariant 4 and the write policy).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include <punch/patcher/transaction.hpp>
#include <punch/result.hpp>

namespace punch::patcher::live {

//! The code that holds one or more sites, read once per validation.
struct Container {
  std::uintptr_t start = 0;
  std::uintptr_t end = 0;
  disasm::FunctionExtent::Source source = disasm::FunctionExtent::Source::kSymbol;
  //! Only punch transactions change bytes here (a symbol, a heap allocation or
  //! a caller-named extent), so bytes between two sites may be rewritten with
  //! the values read under the live lock: sites in it can share one write.
  bool stable = false;
  std::vector<std::uint8_t> bytes;  //!< [start, end) as read.
};

//! A site that passed validation, ready for the live protocol.
struct CheckedSite {
  std::size_t index = 0;           //!< Position in the transaction (for messages).
  std::uintptr_t address = 0;
  std::vector<std::uint8_t> from;  //!< Bytes there now.
  std::vector<std::uint8_t> to;    //!< Bytes to put there.
  bool is_code = true;             //!< In an executable mapping: int3 protocol. Else one plain write.
  std::size_t from_instructions = 0;
  std::size_t to_instructions = 0;
  std::shared_ptr<const Container> container;  //!< Null for data sites.

  std::uintptr_t end() const noexcept { return address + from.size(); }
};

//! Which way a transaction's sites are checked.
enum class Direction {
  kApply,   //!< Current bytes must equal Site::expected; write Site::replacement.
  kRevert,  //!< Current bytes must equal Site::replacement; write Site::expected back.
};

//! Checks every site (see Transaction::validate) and returns them sorted by
//! address. `mismatch` is the code reported when current bytes differ from
//! what the direction expects (kBytesMismatch, or kConflict when they were
//! validated before). Touches no memory but reads.
Result<std::vector<CheckedSite>> check_sites(std::span<const Site> sites, const TransactionOptions& options,
                                             Direction direction, ErrorCode mismatch);

//! Cheap per-site checks done by Transaction::add: sizes and address overflow.
Status check_site_shape(const Site& site);

//! "site #2 at 0x7f..."
std::string site_name(std::size_t index, std::uintptr_t address);

}  // namespace punch::patcher::live
