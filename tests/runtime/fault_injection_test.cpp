// The fault seam: the N-th write or sync fails as asked; EINTR and short
// writes are retried to completion; EIO is reported and changes nothing.
#include <punch/runtime/fault_injection.hpp>

#include <gtest/gtest.h>

#include <cstring>

#include <punch/runtime/code_writer.hpp>
#include <punch/runtime/sync.hpp>

#include "memory_snapshot.hpp"
#include "method_unavailable.hpp"

namespace punch::runtime {
namespace {

using testing::FaultKind;
using testing::FaultPoint;

class WriteFaultTest : public ::testing::TestWithParam<WriteMethod> {
 protected:
  void SetUp() override {
    auto w = CodeWriter::create(GetParam());
    PUNCH_SKIP_IF_METHOD_UNAVAILABLE(GetParam(), w);
    writer = std::move(*w);
    auto r = writer->map_code(1);
    ASSERT_TRUE(r);
    region = *r;
  }
  void TearDown() override {
    testing::clear_faults();
    if (writer) (void)writer->unmap_code(region);
  }
  std::unique_ptr<CodeWriter> writer;
  CodeRegion region;
};

TEST_P(WriteFaultTest, EioFailsTheNthWriteOnlyAndChangesNothing) {
  const std::uint8_t a[] = {1, 2, 3, 4}, b[] = {5, 6, 7, 8};
  testing::inject_fault(FaultPoint::kWrite, 3, FaultKind::kEio);
  EXPECT_TRUE(writer->write(region.address, a));
  EXPECT_TRUE(writer->write(region.address + 8, a));
  test::MemorySnapshot before(region.address, region.size);
  auto third = writer->write(region.address + 16, b);
  ASSERT_FALSE(third);
  EXPECT_NE(third.error().message.find(at(region.address + 16)), std::string::npos) << third.error().message;
  EXPECT_EQ(before.differences(), "");
  EXPECT_TRUE(writer->write(region.address + 16, b)) << "the fault fires once";
  EXPECT_EQ(std::memcmp(reinterpret_cast<const void*>(region.address + 16), b, 4), 0);
}

// The seam counts each piece of a write_each batch as one write, as the
// live protocol's tests (which fail its N-th write) rely on.
TEST_P(WriteFaultTest, WriteEachCountsEveryPieceAndStopsAtTheFailedOne) {
  const std::uint8_t a[] = {1, 2, 3, 4}, b[] = {5, 6, 7, 8};
  const CodeWriter::Piece pieces[] = {{region.address, a}, {region.address + 8, b}, {region.address + 16, b}};
  testing::inject_fault(FaultPoint::kWrite, 2, FaultKind::kEio);
  test::MemorySnapshot before(region.address + 8, 16);
  std::size_t written = 99;
  auto r = writer->write_each(pieces, written);
  ASSERT_FALSE(r);
  EXPECT_EQ(written, 1u);
  EXPECT_NE(r.error().message.find(at(region.address + 8)), std::string::npos) << r.error().message;
  EXPECT_EQ(std::memcmp(reinterpret_cast<const void*>(region.address), a, 4), 0);
  EXPECT_EQ(before.differences(), "");
  EXPECT_EQ(testing::operations_counted(FaultPoint::kWrite), 2u);
}

TEST_P(WriteFaultTest, EintrIsRetried) {
  const std::uint8_t bytes[] = {0xB8, 7, 0, 0, 0, 0xC3};
  testing::inject_fault(FaultPoint::kWrite, 1, FaultKind::kEintr);
  ASSERT_TRUE(writer->write(region.address, bytes));
  EXPECT_EQ(std::memcmp(reinterpret_cast<const void*>(region.address), bytes, sizeof bytes), 0);
}

TEST_P(WriteFaultTest, ShortWriteIsCompleted) {
  std::uint8_t bytes[100];
  for (int i = 0; i < 100; ++i) bytes[i] = static_cast<std::uint8_t>(i);
  testing::inject_fault(FaultPoint::kWrite, 1, FaultKind::kShortWrite);
  ASSERT_TRUE(writer->write(region.address + 1, bytes));
  EXPECT_EQ(std::memcmp(reinterpret_cast<const void*>(region.address + 1), bytes, sizeof bytes), 0);
}

TEST_P(WriteFaultTest, DelayedWriteStillLandsAndCounts) {
  const std::uint8_t bytes[] = {0xB8, 9, 0, 0, 0, 0xC3};
  testing::inject_fault(FaultPoint::kWrite, 1, FaultKind::kDelay);
  ASSERT_TRUE(writer->write(region.address, bytes));
  EXPECT_EQ(testing::faults_fired(FaultPoint::kWrite), 1u);
  EXPECT_EQ(std::memcmp(reinterpret_cast<const void*>(region.address), bytes, sizeof bytes), 0);
}

TEST_P(WriteFaultTest, ClearDisarms) {
  const std::uint8_t bytes[] = {0x90};
  testing::inject_fault(FaultPoint::kWrite, 1, FaultKind::kEio);
  testing::clear_faults();
  EXPECT_TRUE(writer->write(region.address, bytes));
}

INSTANTIATE_TEST_SUITE_P(AllMethods, WriteFaultTest,
                         ::testing::Values(WriteMethod::kProcMem, WriteMethod::kDualMap, WriteMethod::kMprotect),
                         [](const auto& case_info) {
                           std::string name(to_string(case_info.param));
                           std::erase(name, '-');
                           return name;
                         });

TEST(SyncFault, EioFailsTheNthSyncAndInterruptionsAreRetried) {
  testing::inject_fault(FaultPoint::kSync, 2, FaultKind::kEio);
  EXPECT_TRUE(sync_all_threads());
  auto second = sync_all_threads();
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, ErrorCode::kIoError);
  EXPECT_TRUE(sync_all_threads());
  testing::inject_fault(FaultPoint::kSync, 1, FaultKind::kEintr);
  EXPECT_TRUE(sync_all_threads());
  testing::inject_fault(FaultPoint::kSync, 1, FaultKind::kDelay);  // Slower, not failed.
  EXPECT_TRUE(sync_all_threads());
  EXPECT_EQ(testing::faults_fired(FaultPoint::kSync), 1u);
  testing::clear_faults();
}

}  // namespace
}  // namespace punch::runtime
