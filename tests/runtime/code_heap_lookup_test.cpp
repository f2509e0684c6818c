// CodeHeap::allocation_holding: from any interior address to the live
// allocation that holds it, and nothing for free space, freed blocks or
// addresses outside the heap (the patcher uses it to find a site's container);
// allocations_holding, the same for a batch of addresses under one lock.
#include <punch/runtime/code_heap.hpp>

#include "own_heap_fixture.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <vector>

namespace punch::runtime {
namespace {

using test::kPage;

class CodeHeapLookupTest : public test::OwnHeapTest {};

TEST_F(CodeHeapLookupTest, EveryByteOfAnAllocationFindsIt) {
  std::vector<std::uintptr_t> blocks;
  for (std::size_t size : {1u, 16u, 37u, 100u, 4096u}) {
    auto a = heap->allocate(size, 16);
    ASSERT_TRUE(a) << a.error().describe();
    blocks.push_back(*a);
  }
  for (std::uintptr_t start : blocks) {
    const std::size_t size = *heap->allocation_size(start);
    for (std::uintptr_t a = start; a < start + size; ++a) {
      auto found = heap->allocation_holding(a);
      ASSERT_TRUE(found) << found.error().describe();
      EXPECT_EQ(found->begin, start);
      EXPECT_EQ(found->end, start + size);
    }
  }
}

TEST_F(CodeHeapLookupTest, FreeSpaceFreedBlocksAndForeignAddressesAreNotOwned) {
  auto a = heap->allocate(64, 16);
  auto b = heap->allocate(64, 16);
  auto c = heap->allocate(64, 16);
  ASSERT_TRUE(a && b && c);
  ASSERT_TRUE(heap->free(*b));
  for (std::uintptr_t gone : {*b, *b + 1, *b + 63}) {
    auto found = heap->allocation_holding(gone);
    ASSERT_FALSE(found) << "freed space at " << gone;
    EXPECT_EQ(found.error().code, ErrorCode::kNotOwned);
    EXPECT_NE(found.error().message.find(at(gone)), std::string::npos) << found.error().message;
  }
  // Its neighbours are untouched by the free.
  EXPECT_EQ(heap->allocation_holding(*a + 63)->begin, *a);
  EXPECT_EQ(heap->allocation_holding(*c)->begin, *c);
  // Never-allocated space of the arena, an address below every arena, and data of this program.
  const std::uintptr_t after_c = *c + *heap->allocation_size(*c);
  for (std::uintptr_t foreign : {after_c, std::uintptr_t{1}, reinterpret_cast<std::uintptr_t>(&kPage)}) {
    auto found = heap->allocation_holding(foreign);
    ASSERT_FALSE(found) << foreign;
    EXPECT_EQ(found.error().code, ErrorCode::kNotOwned);
  }
}

TEST_F(CodeHeapLookupTest, AgreesWithOwnsOverARandomLayout) {
  std::vector<std::uintptr_t> live;
  for (int i = 0; i < 200; ++i) {
    auto a = heap->allocate(16 + static_cast<std::size_t>(i % 7) * 24, 16);
    ASSERT_TRUE(a);
    live.push_back(*a);
  }
  for (std::size_t i = 0; i < live.size(); i += 3) ASSERT_TRUE(heap->free(live[i]));
  const std::uintptr_t lo = *std::min_element(live.begin(), live.end());
  const std::uintptr_t hi = *std::max_element(live.begin(), live.end()) + 256;
  for (std::uintptr_t a = lo; a < hi; a += 8) {
    auto found = heap->allocation_holding(a);
    ASSERT_EQ(static_cast<bool>(found), heap->owns(a)) << a;
    if (found) {
      EXPECT_TRUE(heap->owns(found->begin, found->end - found->begin));
      EXPECT_FALSE(heap->owns(found->begin - 1, 2));  // Starts exactly at the allocation's start...
      EXPECT_FALSE(heap->owns(found->end - 1, 2));    // ...and ends exactly at its end.
    }
  }
}

// allocations_holding (the patcher's one-lock lookup for a batch of sites)
// answers exactly what allocation_holding answers for each address, whatever
// their order: ascending (where it steps on from the previous answer),
// ascending far apart, descending and repeated.
TEST_F(CodeHeapLookupTest, BatchLookupAgreesWithAllocationHoldingInAnyOrder) {
  std::vector<std::uintptr_t> live;
  for (int i = 0; i < 100; ++i) {
    auto a = heap->allocate(16 + static_cast<std::size_t>(i % 5) * 40, i % 7 == 0 ? kPage : 16);
    ASSERT_TRUE(a) << a.error().describe();
    live.push_back(*a);
  }
  for (std::size_t i = 0; i < live.size(); i += 4) ASSERT_TRUE(heap->free(live[i]));
  const std::uintptr_t lo = *std::min_element(live.begin(), live.end()) - 64;
  const std::uintptr_t hi = *std::max_element(live.begin(), live.end()) + 512;
  std::vector<std::uintptr_t> addresses{1, reinterpret_cast<std::uintptr_t>(&kPage)};  // Outside every arena.
  for (std::uintptr_t a = lo; a < hi; a += 8) addresses.push_back(a);
  std::sort(addresses.begin(), addresses.end());

  std::vector<std::uintptr_t> sparse;  // Many allocations apart.
  for (std::size_t i = 0; i < addresses.size(); i += 97) sparse.push_back(addresses[i]);
  std::vector<std::uintptr_t> descending(addresses.rbegin(), addresses.rend());
  std::vector<std::uintptr_t> repeated;
  for (std::uintptr_t a : addresses) repeated.insert(repeated.end(), {a, a, lo});
  std::size_t owned = 0;
  for (const auto* order : {&addresses, &sparse, &descending, &repeated}) {
    const std::vector<CodeRange> found = heap->allocations_holding(*order);
    ASSERT_EQ(found.size(), order->size());
    for (std::size_t i = 0; i < order->size(); ++i) {
      const std::uintptr_t a = (*order)[i];
      auto one = heap->allocation_holding(a);
      if (one) {
        ++owned;
        EXPECT_EQ(found[i].begin, one->begin) << a;
        EXPECT_EQ(found[i].end, one->end) << a;
      } else {
        EXPECT_EQ(found[i].begin, 0u) << a;
        EXPECT_EQ(found[i].end, 0u) << a;
      }
    }
  }
  EXPECT_GT(owned, 0u) << "control: some addresses are owned";
  EXPECT_TRUE(heap->allocations_holding({}).empty());
}

// A run is one entry of the heap's allocation map: freeing blocks in its
// middle splits it, and blocks allocated into the holes are found as
// themselves, never as part of the run they sit in. Checked byte by byte
// against a model of what is live, after each step.
TEST_F(CodeHeapLookupTest, RunsSplitWhenFreedInTheMiddleAndTheirHolesAreReused) {
  std::map<std::uintptr_t, std::size_t> model;  // Start -> size of each live block.
  auto check = [&](const char* step) {
    const std::uintptr_t lo = model.begin()->first, hi = std::prev(model.end())->first + 256;
    for (std::uintptr_t a = lo; a < hi; ++a) {
      auto after = model.upper_bound(a);
      const bool live = after != model.begin() && a - std::prev(after)->first < std::prev(after)->second;
      auto found = heap->allocation_holding(a);
      ASSERT_EQ(static_cast<bool>(found), live) << step << " at " << at(a);
      if (!live) continue;
      EXPECT_EQ(found->begin, std::prev(after)->first) << step;
      EXPECT_EQ(found->end - found->begin, std::prev(after)->second) << step;
    }
    EXPECT_EQ(heap->stats().allocations, model.size()) << step;
  };
  const std::vector<std::size_t> sizes(8, 48);
  auto run = heap->allocate_run(sizes);
  ASSERT_TRUE(run) << run.error().describe();
  for (std::uintptr_t a : *run) model[a] = 48;
  check("allocated");

  const std::uintptr_t middle[] = {(*run)[2], (*run)[3]};
  ASSERT_TRUE(heap->free_batch(middle));
  ASSERT_TRUE(heap->free((*run)[5]));
  for (std::uintptr_t a : {(*run)[2], (*run)[3], (*run)[5]}) model.erase(a);
  check("freed in the middle");

  const std::vector<std::size_t> two(2, 40);
  auto refill = heap->allocate_run(two);  // First fit: the hole left by blocks 2 and 3.
  ASSERT_TRUE(refill) << refill.error().describe();
  EXPECT_EQ(refill->front(), (*run)[2]);
  for (std::uintptr_t a : *refill) model[a] = 48;  // 40 rounded up to the 16-byte granule.
  check("refilled");

  std::vector<std::uintptr_t> all;
  for (const auto& [start, size] : model) all.push_back(start);
  ASSERT_TRUE(heap->free_batch(all));
  EXPECT_EQ(heap->stats().allocations, 0u);
  EXPECT_EQ(heap->stats().used, 0u);
}

}  // namespace
}  // namespace punch::runtime
