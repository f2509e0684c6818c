// A fixture for tests of a heap of their own: a proc-mem writer and a
// CodeHeap of small arenas (16 pages, so tests fill and cross arenas quickly).
#pragma once

#include <punch/runtime/code_heap.hpp>
#include <punch/runtime/fault_injection.hpp>

#include <gtest/gtest.h>
#include <unistd.h>

#include <memory>

namespace punch::test {

inline const std::size_t kPage = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));

class OwnHeapTest : public ::testing::Test {
 protected:
  void SetUp() override { make_heap(16 * kPage); }
  void TearDown() override { runtime::testing::clear_faults(); }

  //! Replaces the heap with an empty one whose arenas are at least `arena_size` bytes.
  void make_heap(std::size_t arena_size) {
    heap.reset();
    if (!writer) {
      auto w = runtime::CodeWriter::create(runtime::WriteMethod::kProcMem);
      ASSERT_TRUE(w) << w.error().describe();
      writer = std::move(*w);
    }
    heap = std::make_unique<runtime::CodeHeap>(*writer, arena_size);
  }

  std::unique_ptr<runtime::CodeWriter> writer;
  std::unique_ptr<runtime::CodeHeap> heap;
};

}  // namespace punch::test
