// The code heap's map of live allocations (one node per run of blocks) agrees
// with a plain map of every block after each of thousands of random steps:
// runs added into gaps, any subset of blocks freed (splitting runs), every
// address looked up, and a non-start refused by the batch lookup.
#include "live_allocations.hpp"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <vector>

namespace punch::runtime::detail {
namespace {

TEST(LiveAllocations, AgreesWithAMapOfEveryBlockOverRandomRunsAndFrees) {
  LiveAllocations live;
  std::map<std::uintptr_t, std::size_t> model;  // Start -> size of each live block.
  std::mt19937_64 rng(14);
  const std::uintptr_t base = 0x10000, span = 0x2000;
  for (int step = 0; step < 4000 && !HasFailure(); ++step) {
    if (rng() % 2) {  // A run of 1-6 blocks of 16-48 bytes, where it overlaps nothing.
      const std::uintptr_t start = base + (rng() % (span / 16)) * 16;
      std::vector<std::uintptr_t> starts;
      std::uintptr_t end = start;
      for (int i = 0, n = 1 + static_cast<int>(rng() % 6); i < n; ++i) {
        starts.push_back(end);
        end += 16 * (1 + rng() % 3);
      }
      auto after = model.lower_bound(start);
      if (after != model.end() && after->first < end) continue;
      if (after != model.begin() && std::prev(after)->first + std::prev(after)->second > start) continue;
      for (std::size_t i = 0; i < starts.size(); ++i)
        model[starts[i]] = (i + 1 < starts.size() ? starts[i + 1] : end) - starts[i];
      live.add_run(starts, end);
    } else {  // Any quarter of the live blocks, freed together.
      std::vector<std::uintptr_t> freed;
      for (const auto& [start, size] : model)
        if (rng() % 4 == 0) freed.push_back(start);
      std::vector<CodeRange> blocks;
      ASSERT_EQ(live.blocks_starting_at(freed, blocks), freed.size()) << "step " << step;
      for (std::size_t i = 0; i < freed.size(); ++i) {
        EXPECT_EQ(blocks[i].begin, freed[i]);
        EXPECT_EQ(blocks[i].end - blocks[i].begin, model[freed[i]]);
      }
      live.remove(freed);
      for (std::uintptr_t start : freed) model.erase(start);
    }
    std::size_t bytes = 0;
    for (const auto& [start, size] : model) bytes += size;
    ASSERT_EQ(live.count(), model.size());
    ASSERT_EQ(live.bytes(), bytes);
    for (std::uintptr_t a = base - 16; a < base + span + 160; a += 8) {
      auto after = model.upper_bound(a);
      const bool in = after != model.begin() && a - std::prev(after)->first < std::prev(after)->second;
      const CodeRange found = live.holding(a);
      ASSERT_EQ(found.contains(a), in) << "step " << step << " at " << std::hex << a;
      if (in) {
        ASSERT_EQ(found.begin, std::prev(after)->first);
        ASSERT_EQ(found.end - found.begin, std::prev(after)->second);
      }
    }
    std::vector<CodeRange> unused;
    const std::uintptr_t inside[] = {base + 8};  // Never a block's start (starts are 16-aligned).
    ASSERT_EQ(live.blocks_starting_at(inside, unused), 0u);
  }
  EXPECT_GT(model.size(), 0u);
}

}  // namespace
}  // namespace punch::runtime::detail
