// CodeHeap: aligned allocation, reuse of freed space (filled with int3 and
// synced first), placement within a window, statistics, bad input refused
// without changing memory, and thread safety.
#include <punch/runtime/code_heap.hpp>

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <random>
#include <thread>

#include <punch/runtime/fault_injection.hpp>
#include <punch/runtime/maps.hpp>

#include "memory_snapshot.hpp"
#include "own_heap_fixture.hpp"

namespace punch::runtime {
namespace {

using test::kPage;

class CodeHeapTest : public test::OwnHeapTest {};

TEST_F(CodeHeapTest, AllocationsAreAlignedDisjointAndInt3Filled) {
  std::vector<std::pair<std::uintptr_t, std::size_t>> blocks;
  for (std::size_t align : {1u, 2u, 16u, 64u, 256u, 4096u}) {
    auto a = heap->allocate(37, align);
    ASSERT_TRUE(a) << a.error().describe();
    EXPECT_EQ(*a % align, 0u);
    blocks.emplace_back(*a, 37);
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(*a);
    for (int i = 0; i < 37; ++i) ASSERT_EQ(bytes[i], 0xCC);
    EXPECT_TRUE(heap->owns(*a, 37));
    EXPECT_GE(*heap->allocation_size(*a), 37u);
  }
  std::sort(blocks.begin(), blocks.end());
  for (std::size_t i = 1; i < blocks.size(); ++i)
    EXPECT_GE(blocks[i].first, blocks[i - 1].first + blocks[i - 1].second);
}

TEST_F(CodeHeapTest, BadSizesAlignmentsAndWindowsAreRefused) {
  for (std::size_t align : {0u, 3u, 48u, 8192u}) {
    auto a = heap->allocate(16, align);
    ASSERT_FALSE(a) << align;
    EXPECT_EQ(a.error().code, ErrorCode::kInvalidArgument);
  }
  for (std::size_t size : {std::size_t{0}, SIZE_MAX, SIZE_MAX - 8}) {
    auto a = heap->allocate(size);
    ASSERT_FALSE(a) << size;
    EXPECT_EQ(a.error().code, ErrorCode::kInvalidArgument);
  }
  auto empty = heap->allocate(16, 16, AddressWindow{0x5000, 0x4000});
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code, ErrorCode::kInvalidArgument);
  auto own = find_mapping(reinterpret_cast<std::uintptr_t>(&kPage));
  ASSERT_TRUE(own);
  auto full = heap->allocate(16, 16, AddressWindow{own->start, own->end});
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, ErrorCode::kOutOfMemory);
  EXPECT_EQ(heap->stats().allocations, 0u);
}

TEST_F(CodeHeapTest, FreedSpaceIsTrapsAndIsReused) {
  auto a = heap->allocate(100);
  ASSERT_TRUE(a);
  const std::uint8_t ret[] = {0xC3, 0x90, 0x90};
  ASSERT_TRUE(writer->write(*a, ret));
  ASSERT_TRUE(heap->free(*a));
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(*a);
  for (int i = 0; i < 100; ++i) ASSERT_EQ(bytes[i], 0xCC) << i;
  auto b = heap->allocate(100);
  ASSERT_TRUE(b);
  EXPECT_EQ(*b, *a);
  EXPECT_EQ(heap->stats().arenas, 1u);
}

TEST_F(CodeHeapTest, ReusingFreedSpaceSyncsFirstAndFreshSpaceDoesNot) {
  auto a = heap->allocate(64);
  ASSERT_TRUE(a);
  ASSERT_TRUE(heap->free(*a));
  const HeapStats before = heap->stats();
  // A failing sync must stop the reuse of freed space, and change nothing.
  testing::inject_fault(testing::FaultPoint::kSync, 1, testing::FaultKind::kEio);
  auto reuse = heap->allocate(64);
  ASSERT_FALSE(reuse);
  EXPECT_EQ(reuse.error().code, ErrorCode::kIoError);
  EXPECT_EQ(heap->stats().used, before.used);
  EXPECT_EQ(heap->stats().fragments, before.fragments);
  // Once synced, that space is clean: the next allocation needs no sync.
  testing::clear_faults();
  auto again = heap->allocate(64);
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *a);
  auto fresh = heap->allocate(64);
  ASSERT_TRUE(fresh);
  testing::inject_fault(testing::FaultPoint::kSync, 1, testing::FaultKind::kEio);
  auto clean = heap->allocate(64);
  EXPECT_TRUE(clean) << "fresh space is handed out without a sync";
}

// One sync cleans every block freed before it (without visiting them); a block
// freed after it is dirty again.
TEST_F(CodeHeapTest, OneSyncCleansEverythingFreedBeforeIt) {
  auto a = heap->allocate(64, 16);
  auto spacer1 = heap->allocate(64, 16);
  auto b = heap->allocate(64, 16);
  auto spacer2 = heap->allocate(64, 16);
  ASSERT_TRUE(a && spacer1 && b && spacer2);
  ASSERT_TRUE(heap->free(*a));
  ASSERT_TRUE(heap->free(*b));
  auto reuse_a = heap->allocate(64, 16);  // Dirty: syncs.
  ASSERT_TRUE(reuse_a);
  EXPECT_EQ(*reuse_a, *a);
  testing::inject_fault(testing::FaultPoint::kSync, 1, testing::FaultKind::kEio);
  auto reuse_b = heap->allocate(64, 16);  // Freed before that sync: clean, no sync needed.
  testing::clear_faults();
  ASSERT_TRUE(reuse_b) << "space freed before the last sync was synced again";
  EXPECT_EQ(*reuse_b, *b);
  ASSERT_TRUE(heap->free(*reuse_b));  // Freed after it: dirty again.
  testing::inject_fault(testing::FaultPoint::kSync, 1, testing::FaultKind::kEio);
  auto again = heap->allocate(64, 16);
  testing::clear_faults();
  EXPECT_FALSE(again) << "space freed after the last sync was handed out without a sync";
}

TEST_F(CodeHeapTest, BadFreeAndDoubleFreeChangeNothing) {
  auto a = heap->allocate(64);
  auto b = heap->allocate(64);
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(heap->free(*a));
  const HeapStats before = heap->stats();
  test::MemorySnapshot memory(std::min(*a, *b), 256);

  auto twice = heap->free(*a);
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().code, ErrorCode::kNotOwned);
  EXPECT_NE(twice.error().message.find("double free"), std::string::npos) << twice.error().message;
  EXPECT_NE(twice.error().message.find(at(*a)), std::string::npos);

  auto interior = heap->free(*b + 8);
  ASSERT_FALSE(interior);
  EXPECT_EQ(interior.error().code, ErrorCode::kNotOwned);
  auto foreign = heap->free(reinterpret_cast<std::uintptr_t>(&kPage));
  ASSERT_FALSE(foreign);
  EXPECT_EQ(foreign.error().code, ErrorCode::kNotOwned);
  EXPECT_FALSE(heap->allocation_size(*a));

  EXPECT_EQ(memory.differences(), "");
  EXPECT_EQ(heap->stats().used, before.used);
  EXPECT_EQ(heap->stats().fragments, before.fragments);
  EXPECT_TRUE(heap->owns(*b, 64));
  EXPECT_FALSE(heap->owns(*b, 4096));
}

TEST_F(CodeHeapTest, StatisticsFollowAllocationsAndCoalescing) {
  EXPECT_EQ(heap->stats().mapped, 0u);
  std::vector<std::uintptr_t> blocks;
  for (int i = 0; i < 5; ++i) blocks.push_back(*heap->allocate(32));
  HeapStats s = heap->stats();
  EXPECT_EQ(s.arenas, 1u);
  EXPECT_EQ(s.mapped, 16 * kPage);
  EXPECT_EQ(s.used, 5 * 32u);
  EXPECT_EQ(s.free, s.mapped - s.used);
  EXPECT_EQ(s.allocations, 5u);
  EXPECT_EQ(s.fragments, 1u);
  ASSERT_TRUE(heap->free(blocks[1]));
  ASSERT_TRUE(heap->free(blocks[3]));
  EXPECT_EQ(heap->stats().fragments, 3u);
  ASSERT_TRUE(heap->free(blocks[2]));  // Joins 1..3 into one block.
  EXPECT_EQ(heap->stats().fragments, 2u);
  ASSERT_TRUE(heap->free(blocks[0]));
  ASSERT_TRUE(heap->free(blocks[4]));
  s = heap->stats();
  EXPECT_EQ(s.fragments, 1u);
  EXPECT_EQ(s.used, 0u);
  EXPECT_EQ(s.allocations, 0u);
}

TEST_F(CodeHeapTest, LargeAllocationGetsItsOwnArena) {
  auto big = heap->allocate(40 * kPage);
  ASSERT_TRUE(big);
  EXPECT_GE(heap->stats().mapped, 40 * kPage);
  auto small = heap->allocate(16);
  ASSERT_TRUE(small);
  EXPECT_TRUE(heap->owns(*big, 40 * kPage));
}

TEST_F(CodeHeapTest, AllocationsLandWithinTheRequestedWindow) {
  const auto near_code = reinterpret_cast<std::uintptr_t>(&kPage);
  AddressWindow near = AddressWindow::rel32_reach(near_code);
  auto a = heap->allocate(64, 16, near);
  ASSERT_TRUE(a) << a.error().describe();
  EXPECT_TRUE(near.contains(*a, 64));
  // Far from everything: a new arena near there.
  const std::uintptr_t far_target = 0x300000000000;
  AddressWindow far = AddressWindow::rel32_reach(far_target);
  auto b = heap->allocate(64, 16, far);
  ASSERT_TRUE(b) << b.error().describe();
  EXPECT_TRUE(far.contains(*b, 64));
  EXPECT_EQ(heap->stats().arenas, 2u);
  // The window is honoured on reuse too: a later near allocation does not land far.
  auto c = heap->allocate(64, 16, near);
  ASSERT_TRUE(c);
  EXPECT_TRUE(near.contains(*c, 64));
}

TEST_F(CodeHeapTest, RunIsConsecutiveAlignedAndFreedPieceByPiece) {
  const std::size_t sizes[] = {5, 40, 16, 100};
  auto run = heap->allocate_run(sizes, 32);
  ASSERT_TRUE(run) << run.error().describe();
  ASSERT_EQ(run->size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ((*run)[i] % 32, 0u);
    EXPECT_TRUE(heap->owns((*run)[i], sizes[i]));
    if (i) {
      EXPECT_EQ((*run)[i], (*run)[i - 1] + *heap->allocation_size((*run)[i - 1]));
    }
  }
  for (std::uintptr_t a : *run) EXPECT_TRUE(heap->free(a));
  EXPECT_EQ(heap->stats().allocations, 0u);
  const std::size_t bad[] = {16, 0};
  EXPECT_FALSE(heap->allocate_run(bad));
  EXPECT_FALSE(heap->allocate_run({}));
}

TEST_F(CodeHeapTest, ConcurrentAllocateWriteFreeNeverOverlaps) {
  constexpr int kThreads = 4, kRounds = 300;
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      std::vector<std::pair<std::uintptr_t, std::size_t>> mine;
      const auto tag = static_cast<std::uint8_t>(0x10 + t);
      for (int i = 0; i < kRounds; ++i) {
        if (!mine.empty() && rng() % 2) {
          auto [a, size] = mine.back();
          mine.pop_back();
          const auto* bytes = reinterpret_cast<const std::uint8_t*>(a);
          for (std::size_t k = 0; k < size; ++k)
            if (bytes[k] != tag) ++errors;  // Someone else wrote into my block.
          if (!heap->free(a)) ++errors;
        } else {
          std::size_t size = 1 + rng() % 300;
          auto a = heap->allocate(size);
          if (!a) {
            ++errors;
            continue;
          }
          std::vector<std::uint8_t> fill(size, tag);
          if (!writer->write(*a, fill)) ++errors;
          mine.emplace_back(*a, size);
        }
      }
      for (auto [a, size] : mine)
        if (!heap->free(a)) ++errors;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  HeapStats s = heap->stats();
  EXPECT_EQ(s.allocations, 0u);
  EXPECT_EQ(s.free, s.mapped);
}

TEST(CodeHeapLifetime, DestructorUnmapsEveryArena) {
  auto w = CodeWriter::create(WriteMethod::kProcMem);
  ASSERT_TRUE(w);
  std::uintptr_t a = 0;
  {
    CodeHeap heap(**w, 4 * kPage);
    auto r = heap.allocate(64);
    ASSERT_TRUE(r);
    a = *r;
    EXPECT_TRUE(find_mapping(a));
  }
  auto m = find_mapping(a);
  EXPECT_FALSE(m && m->executable && m->start <= a && a < m->end && m->inode == 0 && m->path.empty() && m->readable &&
               !m->writable)
      << "arena still mapped";
}

}  // namespace
}  // namespace punch::runtime

namespace punch::runtime {
namespace {

class CodeHeapBatchFreeTest : public CodeHeapTest {};

TEST_F(CodeHeapBatchFreeTest, FreesEveryAllocationOrNone) {
  const std::size_t sizes[] = {32, 32, 32, 32};
  auto run = heap->allocate_run(sizes);
  ASSERT_TRUE(run);
  const std::uint8_t marker[32] = {0xC3};
  for (std::uintptr_t a : *run) ASSERT_TRUE(writer->write(a, marker));
  test::MemorySnapshot before((*run)[0], 4 * 32);
  const HeapStats stats_before = heap->stats();

  const std::uintptr_t with_stranger[] = {(*run)[0], (*run)[2], (*run)[1] + 8};
  auto refused = heap->free_batch(with_stranger);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kNotOwned);
  EXPECT_NE(refused.error().message.find(at((*run)[1] + 8)), std::string::npos);
  const std::uintptr_t twice[] = {(*run)[0], (*run)[0]};
  auto duplicate = heap->free_batch(twice);
  ASSERT_FALSE(duplicate);
  EXPECT_EQ(duplicate.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(before.differences(), "");
  EXPECT_EQ(heap->stats().allocations, stats_before.allocations);

  // A failing write (the second run) puts the first run's bytes back.
  const std::uintptr_t two_runs[] = {(*run)[0], (*run)[2]};
  testing::inject_fault(testing::FaultPoint::kWrite, 2, testing::FaultKind::kEio);
  ASSERT_FALSE(heap->free_batch(two_runs));
  testing::clear_faults();
  EXPECT_EQ(before.differences(), "");
  EXPECT_EQ(heap->stats().allocations, stats_before.allocations);

  ASSERT_TRUE(heap->free_batch(*run));
  EXPECT_EQ(heap->stats().allocations, 0u);
  const auto* bytes = reinterpret_cast<const std::uint8_t*>((*run)[0]);
  for (int i = 0; i < 4 * 32; ++i) ASSERT_EQ(bytes[i], 0xCC) << i;
}

}  // namespace
}  // namespace punch::runtime
