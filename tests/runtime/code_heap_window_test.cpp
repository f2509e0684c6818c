// Narrow windows: a window narrower than an arena still gets memory (the heap
// maps just what the request needs there), and reserve_room makes sure memory
// in a window can be had without allocating it. (Out-of-line copies of code
// whose RIP-relative data lies near the edge of rel32 reach may only live in
// such a window; the fuzzer found reverts refused because the heap insisted on
// a whole arena, or because the window was full.)
#include <punch/runtime/code_heap.hpp>

#include "own_heap_fixture.hpp"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

namespace punch::runtime {
namespace {

using test::kPage;

// The start of `size` bytes of address space that were free a moment ago.
std::uintptr_t free_range(std::size_t size) {
  void* reserved = ::mmap(nullptr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  EXPECT_NE(reserved, MAP_FAILED);
  EXPECT_EQ(::munmap(reserved, size), 0);
  return reinterpret_cast<std::uintptr_t>(reserved);
}

class CodeHeapWindow : public test::OwnHeapTest {};
class CodeHeapReserveRoom : public test::OwnHeapTest {};

TEST_F(CodeHeapWindow, AWindowNarrowerThanAnArenaStillGetsMemory) {
  ASSERT_NO_FATAL_FAILURE(make_heap(1u << 20));  // Arenas of 1 MiB...
  const std::uintptr_t base = free_range(4u << 20);
  const AddressWindow window{base + (2u << 20), base + (2u << 20) + 16 * kPage};  // ...and a window of 64 KiB.

  auto block = heap->allocate(64, 16, window);
  ASSERT_TRUE(block) << block.error().describe();
  EXPECT_TRUE(window.contains(*block, 64));
  EXPECT_TRUE(heap->free(*block));
}

TEST_F(CodeHeapReserveRoom, MapsAnArenaInTheWindowWithoutAllocating) {
  const std::uintptr_t base = free_range(4u << 20);
  const AddressWindow window{base + (1u << 20), base + (3u << 20)};

  ASSERT_TRUE(heap->reserve_room(100, 16, window));
  EXPECT_EQ(heap->stats().arenas, 1u);
  EXPECT_EQ(heap->stats().allocations, 0u) << "reserve_room allocated";
  ASSERT_TRUE(heap->reserve_room(100, 16, window));
  EXPECT_EQ(heap->stats().arenas, 1u) << "the room found the first time was not found again";
  auto block = heap->allocate(100, 16, window);  // Served by that arena.
  ASSERT_TRUE(block) << block.error().describe();
  EXPECT_EQ(heap->stats().arenas, 1u);
  EXPECT_TRUE(window.contains(*block, 100));
}

TEST_F(CodeHeapReserveRoom, BadInputAndAFullWindowAreErrorsThatMapNothing) {
  ASSERT_NO_FATAL_FAILURE(make_heap(1u << 20));
  EXPECT_EQ(heap->reserve_room(0, 16, {}).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(heap->reserve_room(16, 3, {}).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(heap->reserve_room(16, 16, AddressWindow{0x2000, 0x1000}).error().code, ErrorCode::kInvalidArgument);
  // A window wholly inside a mapping of someone else's.
  void* taken = ::mmap(nullptr, 1u << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(taken, MAP_FAILED);
  const auto t = reinterpret_cast<std::uintptr_t>(taken);
  auto full = heap->reserve_room(16, 16, AddressWindow{t, t + (1u << 20)});
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, ErrorCode::kOutOfMemory) << full.error().describe();
  EXPECT_EQ(heap->stats().arenas, 0u);
  ::munmap(taken, 1u << 20);
}

// has_room answers what reserve_room would, mapping nothing: yes where an
// arena could be mapped, no in a window someone else's mapping fills, and yes
// without a lookup once an arena there has room.
TEST_F(CodeHeapReserveRoom, HasRoomAnswersTheSameAndMapsNothing) {
  ASSERT_NO_FATAL_FAILURE(make_heap(1u << 20));
  const std::uintptr_t base = free_range(4u << 20);
  const AddressWindow window{base + (1u << 20), base + (3u << 20)};
  ASSERT_TRUE(heap->has_room(100, 16, window));
  EXPECT_EQ(heap->stats().arenas, 0u) << "has_room mapped an arena";

  void* taken = ::mmap(nullptr, 1u << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(taken, MAP_FAILED);
  const auto t = reinterpret_cast<std::uintptr_t>(taken);
  auto full = heap->has_room(16, 16, AddressWindow{t, t + (1u << 20)});
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, ErrorCode::kOutOfMemory) << full.error().describe();
  EXPECT_EQ(heap->has_room(0, 16, {}).error().code, ErrorCode::kInvalidArgument);
  ::munmap(taken, 1u << 20);

  ASSERT_TRUE(heap->reserve_room(100, 16, window));
  EXPECT_TRUE(heap->has_room(100, 16, window));
  EXPECT_EQ(heap->stats().arenas, 1u);
}

}  // namespace
}  // namespace punch::runtime
