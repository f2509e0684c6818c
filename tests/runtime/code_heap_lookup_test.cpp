// CodeHeap::allocation_holding: from any interior address to the live
// allocation that holds it, and nothing for free space, freed blocks or
// addresses outside the heap (the patcher uses it to find a site's container).
#include <punch/runtime/code_heap.hpp>

#include "own_heap_fixture.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
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

}  // namespace
}  // namespace punch::runtime
