// The table of generations in flight is bounded: a commit that finds every
// slot taken is refused with kExhausted (a resource ran out, try later), not
// kConflict (nobody else changed the bytes), and leaves memory as it was.
#include <gtest/gtest.h>

#include <vector>

#include "flight_table.hpp"
#include "live_test_support.hpp"
#include "memory_snapshot.hpp"

namespace punch::patcher {
namespace {

TEST(GenerationLimit, EveryGenerationStillHeldIsExhaustionNotAConflict) {
  const std::uintptr_t f = test::emit_return(1);
  ASSERT_TRUE(reclaim_retired_copies());
  // Generations still in flight (no thread ever finishes them) hold every free slot.
  std::vector<live::Generation*> held;
  for (;;) {
    auto* g = new live::Generation;
    if (!live::publish(g)) {
      delete g;
      break;
    }
    held.push_back(g);
  }
  ASSERT_FALSE(held.empty());
  const test::MemorySnapshot before(f, 6);
  Transaction tx;
  ASSERT_TRUE(tx.add(test::site(f, test::mov_eax(1), test::mov_eax(2))));
  auto committed = tx.commit();
  for (live::Generation* g : held) {
    live::unpublish(g);
    delete g;
  }
  ASSERT_FALSE(committed);
  EXPECT_EQ(committed.error().code, ErrorCode::kExhausted) << committed.error().describe();
  EXPECT_TRUE(before.unchanged()) << before.differences();
  EXPECT_EQ(test::as<int (*)()>(f)(), 1);
  // Once slots are free again the same transaction commits.
  auto again = tx.commit();
  ASSERT_TRUE(again) << again.error().describe();
  EXPECT_EQ(test::as<int (*)()>(f)(), 2);
  EXPECT_TRUE(tx.revert());
}

}  // namespace
}  // namespace punch::patcher
