// The code heap's live allocations, kept as they were handed out: one node per
// run of consecutive blocks (a Jit batch of 1,024 functions is one node, not
// 1,024), so allocating or freeing a batch costs one tree insert or erase.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <vector>

#include <punch/runtime/threads.hpp>

namespace punch::runtime::detail {

//! Live blocks, by address. A node's blocks follow each other with no gap:
//! freeing blocks in its middle splits it, so nodes never overlap. Not
//! thread-safe (the heap's lock guards it).
class LiveAllocations {
 public:
  //! Records blocks starting at `starts` (ascending), each ending where the
  //! next starts, the last at `end`. They must overlap no live block.
  void add_run(std::vector<std::uintptr_t> starts, std::uintptr_t end);

  //! The live block holding `address` anywhere inside it, or {0, 0}.
  CodeRange holding(std::uintptr_t address) const;

  //! For ascending distinct `starts`: each one's block, into `blocks`. Returns
  //! the index of the first that starts no live block, or starts.size().
  //! Consecutive blocks (a batch) cost a step each, not a search.
  std::size_t blocks_starting_at(std::span<const std::uintptr_t> starts, std::vector<CodeRange>& blocks) const;

  //! Removes the blocks starting at `starts` (ascending, each a live block's start).
  void remove(std::span<const std::uintptr_t> starts);

  std::size_t count() const noexcept { return count_; }  //!< Live blocks.
  std::size_t bytes() const noexcept { return bytes_; }  //!< Their bytes, padding included.

 private:
  struct Run {
    std::vector<std::uintptr_t> starts;  // Ascending; starts.front() is the node's key.
    std::uintptr_t end;                  // Where the last block ends.
    CodeRange block(std::size_t i) const { return {starts[i], i + 1 < starts.size() ? starts[i + 1] : end}; }
  };
  // Adds a node for blocks already counted.
  void keep(std::vector<std::uintptr_t> starts, std::uintptr_t end);

  std::map<std::uintptr_t, Run> runs_;
  std::size_t count_ = 0, bytes_ = 0;
};

}  // namespace punch::runtime::detail
