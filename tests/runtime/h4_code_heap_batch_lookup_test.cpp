// CodeHeap::allocations_holding (the patcher's one-lock lookup for a batch of
// sites) answers exactly what allocation_holding answers for each address,
// whatever their order: ascending (where it steps on from the previous
// answer), ascending far apart, descending and repeated.
#include <punch/runtime/code_heap.hpp>

#include "own_heap_fixture.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

namespace punch::runtime {
namespace {

using test::kPage;

class CodeHeapBatchLookup : public test::OwnHeapTest {};

TEST_F(CodeHeapBatchLookup, AgreesWithAllocationHoldingInAnyOrder) {
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

}  // namespace
}  // namespace punch::runtime
