#include "live_allocations.hpp"

#include <algorithm>
#include <iterator>
#include <utility>

namespace punch::runtime::detail {

void LiveAllocations::add_run(std::vector<std::uintptr_t> starts, std::uintptr_t end) {
  if (starts.empty()) return;
  count_ += starts.size();
  bytes_ += end - starts.front();
  keep(std::move(starts), end);
}

void LiveAllocations::keep(std::vector<std::uintptr_t> starts, std::uintptr_t end) {
  const std::uintptr_t key = starts.front();  // Read before `starts` is moved from.
  runs_.emplace(key, Run{std::move(starts), end});
}

CodeRange LiveAllocations::holding(std::uintptr_t address) const {
  auto after = runs_.upper_bound(address);
  if (after == runs_.begin()) return {};
  const Run& run = std::prev(after)->second;
  if (address >= run.end) return {};
  auto next = std::upper_bound(run.starts.begin(), run.starts.end(), address);
  return run.block(static_cast<std::size_t>(next - run.starts.begin()) - 1);
}

std::size_t LiveAllocations::blocks_starting_at(std::span<const std::uintptr_t> starts,
                                                std::vector<CodeRange>& blocks) const {
  auto run = runs_.end();
  std::size_t index = 0;  // Of the block found last, in `run`.
  for (std::size_t i = 0; i < starts.size(); ++i) {
    // Usually the block right after the one found last.
    if (run != runs_.end() && ++index == run->second.starts.size()) {
      ++run;
      index = 0;
    }
    if (run == runs_.end() || run->second.starts[index] != starts[i]) {
      auto after = runs_.upper_bound(starts[i]);
      if (after == runs_.begin()) return i;
      run = std::prev(after);
      const auto& s = run->second.starts;
      auto found = std::lower_bound(s.begin(), s.end(), starts[i]);
      if (found == s.end() || *found != starts[i]) return i;
      index = static_cast<std::size_t>(found - s.begin());
    }
    blocks.push_back(run->second.block(index));
  }
  return starts.size();
}

void LiveAllocations::remove(std::span<const std::uintptr_t> starts) {
  std::size_t i = 0;
  while (i < starts.size()) {
    auto node = std::prev(runs_.upper_bound(starts[i]));
    const Run run = std::move(node->second);
    runs_.erase(node);
    // Keep the blocks not listed, as nodes of consecutive survivors.
    std::vector<std::uintptr_t> kept;
    for (std::size_t b = 0; b < run.starts.size(); ++b) {
      const CodeRange block = run.block(b);
      if (i < starts.size() && starts[i] == block.begin) {
        ++i;
        --count_;
        bytes_ -= block.end - block.begin;
        if (!kept.empty()) keep(std::exchange(kept, {}), block.begin);
      } else {
        kept.push_back(block.begin);
      }
    }
    if (!kept.empty()) keep(std::move(kept), run.end);
  }
}

}  // namespace punch::runtime::detail
