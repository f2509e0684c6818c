// The types every validation step reads and the live protocol consumes: the
// sites that passed, the code that holds them, and what was read and decoded.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include <punch/disasm/instruction.hpp>
#include <punch/disasm/validate.hpp>
#include <punch/patcher/transaction.hpp>

namespace punch::patcher::live {

//! CheckedSite::container of a data site.
constexpr std::uint32_t kNoContainer = UINT32_MAX;

//! The code that holds one or more sites, read once and decoded once per validation.
struct Container {
  std::uintptr_t start = 0;
  std::uintptr_t end = 0;
  disasm::FunctionExtent::Source source = disasm::FunctionExtent::Source::kSymbol;
  //! Only punch transactions change bytes here (a symbol, a heap allocation or
  //! a caller-named extent), so bytes between two sites may be rewritten with
  //! the values read under the live lock: sites in it can share one write.
  bool stable = false;
  std::size_t bytes_begin = 0;  //!< Its bytes as read: CheckedBatch::bytes[bytes_begin, +end-start).
};

//! A site that passed validation, ready for the live protocol.
struct CheckedSite {
  std::size_t index = 0;  //!< Position in the transaction (for messages).
  std::uintptr_t address = 0;
  std::span<const std::uint8_t> from;  //!< Bytes there now (a view of the transaction's Site).
  std::span<const std::uint8_t> to;    //!< Bytes to put there (likewise).
  bool is_code = true;                 //!< In an executable mapping: int3 protocol. Else one plain write.
  std::uint32_t container = kNoContainer;
  std::uint32_t from_begin = 0;  //!< Its old instructions: CheckedBatch::instructions[from_begin, +from_instructions).
  std::uint32_t from_instructions = 0;
  std::uint32_t to_instructions = 0;
  bool from_plain = false;  //!< Every old instruction runs_anywhere: its copy is its bytes.
  bool to_plain = false;    //!< Likewise for the new instructions.
  //! An indirect jump among several new instructions (0: none): the branch
  //! scan of a revert would find it inside the range and refuse to undo it.
  std::uintptr_t to_indirect_jump = 0;

  std::uintptr_t end() const noexcept { return address + from.size(); }
};

//! What decode_container gave for one container: a function of the
//! container's address and bytes alone, so a ContainerMemo entry whose two
//! equal a later validation's holds exactly what that validation would decode.
struct ContainerDecode {
  std::uintptr_t start = 0;
  std::vector<std::uint8_t> bytes;
  std::vector<disasm::Instruction> instructions;  //!< decode_container's list (it reached the end).
};

//! The outcome of a validation: the sites by address, and what was read and
//! decoded for them (shared, so a batch costs a few allocations, not a few per site).
struct CheckedBatch {
  std::vector<CheckedSite> sites;  //!< Sorted by address.
  std::vector<Container> containers;
  std::vector<std::uint8_t> bytes;                //!< Every container's bytes, back to back.
  std::vector<disasm::Instruction> instructions;  //!< Every code site's old instructions, site after site.
  //! The decodes of the containers as they will be once every site holds its
  //! new bytes, for the ContainerMemo after a successful run (only when
  //! validation was given a memo, and only where each site's instructions
  //! are swapped one for one).
  std::vector<ContainerDecode> after;

  std::span<const std::uint8_t> bytes_of(const Container& c) const noexcept {
    return std::span<const std::uint8_t>(bytes).subspan(c.bytes_begin, c.end - c.start);
  }
  std::span<const disasm::Instruction> old_instructions(const CheckedSite& s) const noexcept {
    return std::span<const disasm::Instruction>(instructions).subspan(s.from_begin, s.from_instructions);
  }
};

//! Which way a transaction's sites are checked.
enum class Direction {
  kApply,   //!< Current bytes must equal Site::expected; write Site::replacement.
  kRevert,  //!< Current bytes must equal Site::replacement; write Site::expected back.
};

class SiteDecodes;
class ContainerMemo;

//! What a caller already knows of the sites, derived from them alone (so
//! never stale); each part left empty is worked out by check_sites.
struct SiteFacts {
  const SiteDecodes* decodes = nullptr;       //!< Their bytes decoded; must cover every site.
  std::span<const std::uint32_t> by_address;  //!< Their indexes, ascending by address.
  //! Decodes of containers kept from earlier commits (null: none). Only
  //! under the live lock: commit and revert, never validate().
  ContainerMemo* memo = nullptr;
};

//! How validation makes sure that new code of several instructions could be
//! undone live: its out-of-line copy needs heap memory within rel32 reach of
//! the site and of its RIP-relative operands.
enum class CopyRoom {
  kLook,     //!< Only look: room in an arena, or a free range an arena could take (validate()).
  kReserve,  //!< Map an arena there when none has room, and keep it (commit and revert).
};

}  // namespace punch::patcher::live
