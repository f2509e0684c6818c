// A window narrower than an arena still gets memory: the heap maps just what
// the request needs there. (Out-of-line copies of code whose RIP-relative data
// lies near the edge of rel32 reach may only live in such a window; the
// fuzzer found a revert refused because the heap insisted on a whole arena.)
#include <punch/runtime/code_heap.hpp>

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

namespace punch::runtime {
namespace {

TEST(CodeHeapWindow, AWindowNarrowerThanAnArenaStillGetsMemory) {
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  auto writer = CodeWriter::create(WriteMethod::kProcMem);
  ASSERT_TRUE(writer) << writer.error().describe();
  CodeHeap heap(**writer, 1u << 20);  // Arenas of 1 MiB...

  // ...and a free window of 64 KiB in the middle of a free 4 MiB range.
  void* reserved = ::mmap(nullptr, 4u << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(reserved, MAP_FAILED);
  ASSERT_EQ(::munmap(reserved, 4u << 20), 0);
  const auto base = reinterpret_cast<std::uintptr_t>(reserved);
  const AddressWindow window{base + (2u << 20), base + (2u << 20) + 16 * page};

  auto block = heap.allocate(64, 16, window);
  ASSERT_TRUE(block) << block.error().describe();
  EXPECT_GE(*block, window.lo);
  EXPECT_LE(*block + 64, window.hi);
  EXPECT_TRUE(heap.free(*block));
}

}  // namespace
}  // namespace punch::runtime

namespace punch::runtime {
namespace {

TEST(CodeHeapReserveRoom, MapsAnArenaInTheWindowWithoutAllocating) {
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  auto writer = CodeWriter::create(WriteMethod::kProcMem);
  ASSERT_TRUE(writer) << writer.error().describe();
  CodeHeap heap(**writer, 16 * page);
  void* reserved = ::mmap(nullptr, 4u << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(reserved, MAP_FAILED);
  ASSERT_EQ(::munmap(reserved, 4u << 20), 0);
  const auto base = reinterpret_cast<std::uintptr_t>(reserved);
  const AddressWindow window{base + (1u << 20), base + (3u << 20)};

  ASSERT_TRUE(heap.reserve_room(100, 16, window));
  EXPECT_EQ(heap.stats().arenas, 1u);
  EXPECT_EQ(heap.stats().allocations, 0u) << "reserve_room allocated";
  ASSERT_TRUE(heap.reserve_room(100, 16, window));
  EXPECT_EQ(heap.stats().arenas, 1u) << "the room found the first time was not found again";
  auto block = heap.allocate(100, 16, window);  // Served by that arena.
  ASSERT_TRUE(block) << block.error().describe();
  EXPECT_EQ(heap.stats().arenas, 1u);
  EXPECT_TRUE(window.contains(*block, 100));
}

TEST(CodeHeapReserveRoom, BadInputAndAFullWindowAreErrorsThatMapNothing) {
  auto writer = CodeWriter::create(WriteMethod::kProcMem);
  ASSERT_TRUE(writer) << writer.error().describe();
  CodeHeap heap(**writer);
  EXPECT_EQ(heap.reserve_room(0, 16, {}).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(heap.reserve_room(16, 3, {}).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(heap.reserve_room(16, 16, AddressWindow{0x2000, 0x1000}).error().code, ErrorCode::kInvalidArgument);
  // A window wholly inside a mapping of someone else's.
  void* taken = ::mmap(nullptr, 1u << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(taken, MAP_FAILED);
  const auto t = reinterpret_cast<std::uintptr_t>(taken);
  auto full = heap.reserve_room(16, 16, AddressWindow{t, t + (1u << 20)});
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, ErrorCode::kOutOfMemory) << full.error().describe();
  EXPECT_EQ(heap.stats().arenas, 0u);
  ::munmap(taken, 1u << 20);
}

}  // namespace
}  // namespace punch::runtime
