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
