// Each site's expected and replacement bytes decoded at its address, once per transaction.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include <punch/disasm/instruction.hpp>
#include <punch/patcher/transaction.hpp>

namespace punch::patcher::live {

//! A Site never changes once added, and a decode depends only on the bytes
//! and their address, so these instructions never go stale. Validation uses
//! them only for bytes it has just read from memory and found equal to the
//! site's, which then decode to exactly these instructions: a commit and a
//! revert of the same transaction decode nothing again.
class SiteDecodes {
 public:
  //! Decodes the sites not covered yet (Transaction::add only appends); a
  //! decode that differs from one already made only in an instruction's
  //! relative field or a mov's immediate is derived from it, not decoded.
  void cover(std::span<const Site> sites);

  //! The instructions of site `index`'s replacement (or expected) bytes, or
  //! empty when they are not whole instructions (validation then decodes
  //! them itself, for the exact error).
  std::span<const disasm::Instruction> of(std::size_t index, bool replacement) const noexcept;

 private:
  struct Entry {
    std::uint32_t begin = 0;
    std::uint32_t count = 0;  // 0: not whole instructions.
  };
  std::vector<Entry> expected_, replacement_;  // Per site.
  std::vector<disasm::Instruction> instructions_;
};

}  // namespace punch::patcher::live
