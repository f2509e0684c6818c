// The decodes of containers validated before, kept from one commit to the
// next: a JIT that changes points of one function again and again (a fresh
// transaction each time) decodes the function once, not at every change.
#pragma once

#include <cstddef>
#include <optional>
#include <vector>

#include <punch/disasm/instruction.hpp>

#include "checked_site.hpp"
#include "site_containers.hpp"

namespace punch::patcher::live {

//! A few ContainerDecodes, process-wide. Used only under the live lock
//! (commit and revert): validate() runs without it and passes none.
class ContainerMemo {
 public:
  //! Moves the entry for `code` (its address and bytes) into `out` and forgets it; false when none has them.
  bool take(disasm::CodeSpan code, std::vector<disasm::Instruction>& out);

  //! Keeps `decodes` (the containers as a successful run left them),
  //! replacing any entry of the same start, and forgetting the oldest beyond
  //! kMaxEntries or kMaxBytes of container bytes.
  void keep(std::vector<ContainerDecode>&& decodes);

  static constexpr std::size_t kMaxEntries = 8;
  static constexpr std::size_t kMaxBytes = 512 * 1024;  //!< Their instructions take about 16 times more.

 private:
  std::vector<ContainerDecode> entries_;  // Oldest first.
};

//! The process's memo (guarded by the live lock).
ContainerMemo& container_memo();

//! The decode of `code` once each of `sites` holds its new bytes, made from
//! `decoded` (decode_container's list for the code as it is, moved from):
//! the code between sites is unchanged, and decoding resumes at each site's
//! end whatever the site holds, so only each site's instructions change, to
//! its new ones (`known`). Nothing when a site's new instructions are not
//! known, are not as many as its old ones in the list, or include a one-byte
//! int3, ret or nop (`decoded` is then untouched).
std::optional<ContainerDecode> after_change(disasm::CodeSpan code, const Members& sites, const Known& known,
                                            std::vector<disasm::Instruction>& decoded);

}  // namespace punch::patcher::live
