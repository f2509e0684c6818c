// CodeHeap skips an arena whose free blocks are all too small for a request
// without walking them; what it remembers must never hide space that became
// free since: first fit still picks the first arena that has room.
#include <punch/runtime/code_heap.hpp>

#include "own_heap_fixture.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <vector>

namespace punch::runtime {
namespace {

using test::kPage;

class CodeHeapLargestFree : public test::OwnHeapTest {};

TEST_F(CodeHeapLargestFree, SpaceFreedInAnArenaOnceTooFragmentedIsFoundAgain) {
  const std::size_t arena = 16 * kPage;  // The fixture's arena size.
  // Fill the first arena with 256-byte blocks, then free every other one: holes of 256 bytes.
  std::vector<std::uintptr_t> blocks;
  for (std::size_t i = 0; i < arena / 256; ++i) {
    auto a = heap->allocate(256, 16);
    ASSERT_TRUE(a) << a.error().describe();
    blocks.push_back(*a);
  }
  ASSERT_EQ(heap->stats().arenas, 1u);
  const std::uintptr_t first_arena = blocks.front();
  for (std::size_t i = 0; i < blocks.size(); i += 2) ASSERT_TRUE(heap->free(blocks[i]));

  // Too big for any hole: a second arena (the first one's scan fails).
  auto big = heap->allocate(1024, 16);
  ASSERT_TRUE(big) << big.error().describe();
  EXPECT_EQ(heap->stats().arenas, 2u);
  EXPECT_FALSE(*big >= first_arena && *big < first_arena + arena);
  // A hole still serves a request it fits.
  auto small = heap->allocate(200, 16);
  ASSERT_TRUE(small);
  EXPECT_TRUE(*small >= first_arena && *small < first_arena + arena);
  ASSERT_TRUE(heap->free(*small));

  // Freeing the rest merges the first arena into one block: first fit goes there again.
  for (std::size_t i = 1; i < blocks.size(); i += 2) ASSERT_TRUE(heap->free(blocks[i]));
  auto again = heap->allocate(arena / 2, 16);
  ASSERT_TRUE(again) << again.error().describe();
  EXPECT_TRUE(*again >= first_arena && *again < first_arena + arena) << "the merged space was not found";
  EXPECT_EQ(heap->stats().arenas, 2u);
}

}  // namespace
}  // namespace punch::runtime
