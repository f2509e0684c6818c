// CodeWriter: every method writes into R+X memory it never makes writable+executable;
// bad input and unmapped targets are errors that change nothing.
#include <punch/runtime/code_writer.hpp>

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <thread>
#include <vector>

#include <punch/runtime/maps.hpp>
#include <punch/runtime/probe.hpp>

#include "child_process.hpp"
#include "memory_snapshot.hpp"
#include "method_unavailable.hpp"

namespace punch::runtime {
namespace {

const std::size_t kPage = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));

TEST(WriteMethodNames, RoundTripAndAutoAndUnknown) {
  for (WriteMethod m : {WriteMethod::kProcMem, WriteMethod::kDualMap, WriteMethod::kMprotect}) {
    auto parsed = parse_write_method(to_string(m));
    ASSERT_TRUE(parsed);
    EXPECT_EQ(*parsed, m);
  }
  auto automatic = parse_write_method("auto");
  ASSERT_TRUE(automatic);
  EXPECT_FALSE(automatic->has_value());
  auto bad = parse_write_method("rwx");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(bad.error().message.find("\"rwx\""), std::string::npos) << bad.error().message;
}

TEST(CodeWriterFromName, UnknownNameIsAnErrorNotAFallback) {
  auto w = CodeWriter::from_name("proc_mem");
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().code, ErrorCode::kInvalidArgument);
}

TEST(CodeWriterFromName, AutoPicksWhatTheProbePicks) {
  auto w = CodeWriter::from_name("auto");
  Capabilities caps = probe();
  ASSERT_EQ(w.has_value(), caps.auto_method.has_value());
  if (w) {
    EXPECT_EQ((*w)->method(), *caps.auto_method);
  }
}

TEST(CodeWriterGlobal, IsAWorkingWriter) {
  auto w = CodeWriter::global();
  ASSERT_TRUE(w) << w.error().describe();
  EXPECT_TRUE(probe_method((*w)->method()));
}

TEST(AddressWindow, Rel32ReachSaturatesAndIntersects) {
  AddressWindow low = AddressWindow::rel32_reach(0x1000);
  EXPECT_EQ(low.lo, 0u);
  EXPECT_LT(low.hi, 0x1000u + 0x80000000u);
  AddressWindow high = AddressWindow::rel32_reach(UINTPTR_MAX - 10);
  EXPECT_EQ(high.hi, UINTPTR_MAX);
  AddressWindow mid = AddressWindow::rel32_reach(0x7f0000000000);
  EXPECT_TRUE(mid.contains(0x7f0000000000 - 0x7fff0000, 16));
  EXPECT_FALSE(mid.contains(0x7f0000000000 + 0x7fff0000 - 8, 16));
  EXPECT_TRUE(AddressWindow::rel32_reach(0x100000000000).intersect(mid).empty());
}

class CodeWriterMethodTest : public ::testing::TestWithParam<WriteMethod> {
 protected:
  void SetUp() override {
    auto w = CodeWriter::create(GetParam());
    PUNCH_SKIP_IF_METHOD_UNAVAILABLE(GetParam(), w);
    writer = std::move(*w);
  }
  std::unique_ptr<CodeWriter> writer;
};

TEST_P(CodeWriterMethodTest, MapsReadExecuteInt3PagesAndWritesThem) {
  auto region = writer->map_code(100);
  ASSERT_TRUE(region) << region.error().describe();
  EXPECT_EQ(region->size, kPage);
  EXPECT_EQ(region->address % kPage, 0u);
  const auto* code = reinterpret_cast<const std::uint8_t*>(region->address);
  for (std::size_t i = 0; i < region->size; ++i) ASSERT_EQ(code[i], 0xCC) << "offset " << i;

  const std::uint8_t ret42[] = {0xB8, 42, 0, 0, 0, 0xC3};  // mov eax, 42; ret
  ASSERT_TRUE(writer->write(region->address + 32, ret42));
  EXPECT_EQ(std::memcmp(code + 32, ret42, sizeof ret42), 0);
  EXPECT_EQ(reinterpret_cast<int (*)()>(region->address + 32)(), 42);

  auto m = find_mapping(region->address);
  ASSERT_TRUE(m);
  EXPECT_TRUE(m->readable && m->executable);
  EXPECT_FALSE(m->writable);
  EXPECT_TRUE(writer->unmap_code(*region));
  EXPECT_FALSE(find_mapping(region->address) && find_mapping(region->address)->start == region->address &&
               find_mapping(region->address)->executable);
}

// While a thread holds exclusive(), its own writes go through at once (a live
// change writes while other threads are held, and one of them may have been
// paused waiting for the writer) and another thread's write waits until it
// is released. Under proc-mem no write takes the lock at all.
TEST_P(CodeWriterMethodTest, ExclusiveLetsOnlyItsThreadWrite) {
  auto region = writer->map_code(100);
  ASSERT_TRUE(region) << region.error().describe();
  const std::uint8_t ret1[] = {0xB8, 1, 0, 0, 0, 0xC3};
  const std::uint8_t ret2[] = {0xB8, 2, 0, 0, 0, 0xC3};
  std::atomic<bool> other_wrote{false};
  std::optional<CodeWriter::Exclusive> exclusive;
  exclusive.emplace(writer->exclusive());
  std::thread other([&] {
    EXPECT_TRUE(writer->write(region->address + 64, ret2));
    other_wrote = true;
  });
  EXPECT_TRUE(writer->write(region->address, ret1));  // Its own write: no deadlock on the held lock.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(other_wrote.load(), GetParam() == WriteMethod::kProcMem) << "the other thread's write did not wait";
  exclusive.reset();
  other.join();
  EXPECT_TRUE(other_wrote.load());
  EXPECT_EQ(reinterpret_cast<int (*)()>(region->address)(), 1);
  EXPECT_EQ(reinterpret_cast<int (*)()>(region->address + 64)(), 2);
  EXPECT_TRUE(writer->unmap_code(*region));
}

TEST_P(CodeWriterMethodTest, LargeWriteAcrossPagesLandsWhole) {
  auto region = writer->map_code(4 * kPage);
  ASSERT_TRUE(region);
  std::vector<std::uint8_t> bytes(3 * kPage + 17);
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>(i * 7);
  ASSERT_TRUE(writer->write(region->address + 5, bytes));
  EXPECT_EQ(std::memcmp(reinterpret_cast<const void*>(region->address + 5), bytes.data(), bytes.size()), 0);
  EXPECT_TRUE(writer->unmap_code(*region));
}

TEST_P(CodeWriterMethodTest, EmptyWriteIsANoOpAndNullIsRefused) {
  auto region = writer->map_code(1);
  ASSERT_TRUE(region);
  test::MemorySnapshot before(region->address, region->size);
  EXPECT_TRUE(writer->write(region->address, {}));
  const std::uint8_t one[] = {0x90};
  auto null = writer->write(0, one);
  ASSERT_FALSE(null);
  EXPECT_EQ(null.error().code, ErrorCode::kInvalidArgument);
  std::uint8_t two[2] = {};
  auto overflow = writer->write(UINTPTR_MAX, two);
  ASSERT_FALSE(overflow);
  EXPECT_EQ(overflow.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(before.differences(), "");
  EXPECT_TRUE(writer->unmap_code(*region));
}

TEST_P(CodeWriterMethodTest, WriteRunningIntoAHoleChangesNothing) {
  if (GetParam() == WriteMethod::kDualMap)
    GTEST_SKIP() << "dual-map writes through its own RW view, which a hole in the RX view does not touch";
  auto region = writer->map_code(2 * kPage);
  ASSERT_TRUE(region);
  // Punch a hole: the second page goes away behind the writer's back.
  ASSERT_EQ(::munmap(reinterpret_cast<void*>(region->address + kPage), kPage), 0);
  test::MemorySnapshot before(region->address, kPage);
  std::vector<std::uint8_t> bytes(64, 0x90);
  auto r = writer->write(region->address + kPage - 32, bytes);
  ASSERT_FALSE(r);
  EXPECT_TRUE(r.error().code == ErrorCode::kNotMapped || r.error().code == ErrorCode::kNotOwned)
      << r.error().describe();
  EXPECT_NE(r.error().message.find("0x"), std::string::npos) << r.error().message;
  EXPECT_EQ(before.differences(), "");
  EXPECT_TRUE(writer->unmap_code(*region));
}

TEST_P(CodeWriterMethodTest, WriteToUnmappedAddressIsAnErrorNamingIt) {
  void* p = ::mmap(nullptr, kPage, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  ::munmap(p, kPage);
  const std::uint8_t bytes[] = {0xC3};
  auto r = writer->write(reinterpret_cast<std::uintptr_t>(p), bytes);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find(at(p)), std::string::npos) << r.error().message;
}

// write_each: every piece lands, in order, including one over two pages
// (which takes write()'s own path) and an empty one.
TEST_P(CodeWriterMethodTest, WriteEachWritesEveryPiece) {
  auto region = writer->map_code(3 * kPage);
  ASSERT_TRUE(region);
  const std::uint8_t a[] = {0xB8, 1, 0, 0, 0, 0xC3}, b[] = {0xB8, 2, 0, 0, 0, 0xC3};
  std::vector<std::uint8_t> across(40);
  for (std::size_t i = 0; i < across.size(); ++i) across[i] = static_cast<std::uint8_t>(0x40 + i);
  const CodeWriter::Piece pieces[] = {{region->address + 2 * kPage + 8, a},
                                      {region->address + 16, b},
                                      {region->address + 2 * kPage, {}},
                                      {region->address + kPage - 20, across}};
  std::size_t written = 99;
  ASSERT_TRUE(writer->write_each(pieces, written));
  EXPECT_EQ(written, 4u);
  for (const CodeWriter::Piece& p : pieces) {
    if (p.bytes.empty()) continue;  // memcmp must not see its null data.
    EXPECT_EQ(std::memcmp(reinterpret_cast<const void*>(p.address), p.bytes.data(), p.bytes.size()), 0)
        << at(p.address);
  }
  EXPECT_EQ(reinterpret_cast<int (*)()>(region->address + 2 * kPage + 8)(), 1);
  EXPECT_TRUE(writer->unmap_code(*region));
}

// write_each stops at the first piece that fails, with that piece's error:
// the pieces before it are written, the ones after it untouched.
TEST_P(CodeWriterMethodTest, WriteEachStopsAtTheFirstFailureAndNamesIt) {
  auto region = writer->map_code(2 * kPage);
  ASSERT_TRUE(region);
  void* gone = ::mmap(nullptr, kPage, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);  // Unmapped again at once.
  ASSERT_NE(gone, MAP_FAILED);
  ::munmap(gone, kPage);
  const std::uint8_t a[] = {0x90, 0x90}, b[] = {0xC3};
  const std::uintptr_t hole = reinterpret_cast<std::uintptr_t>(gone) + 64;
  test::MemorySnapshot second_page(region->address + kPage, kPage);
  const CodeWriter::Piece pieces[] = {{region->address + 4, a}, {hole, b}, {region->address + kPage + 4, a}};
  std::size_t written = 99;
  auto r = writer->write_each(pieces, written);
  ASSERT_FALSE(r);
  EXPECT_EQ(written, 1u);
  EXPECT_TRUE(r.error().code == ErrorCode::kNotMapped || r.error().code == ErrorCode::kNotOwned)
      << r.error().describe();
  EXPECT_NE(r.error().message.find(at(hole)), std::string::npos) << r.error().message;
  EXPECT_EQ(std::memcmp(reinterpret_cast<const void*>(region->address + 4), a, sizeof a), 0);
  EXPECT_EQ(second_page.differences(), "");
  EXPECT_TRUE(writer->unmap_code(*region));
}

TEST_P(CodeWriterMethodTest, MapWithinAWindowAndRefuseImpossibleOnes) {
  const auto anchor = reinterpret_cast<std::uintptr_t>(&kPage);
  AddressWindow near = AddressWindow::rel32_reach(anchor);
  auto region = writer->map_code(3 * kPage, near);
  ASSERT_TRUE(region) << region.error().describe();
  EXPECT_TRUE(near.contains(region->address, region->size));
  EXPECT_TRUE(writer->unmap_code(*region));

  auto zero = writer->map_code(0);
  ASSERT_FALSE(zero);
  EXPECT_EQ(zero.error().code, ErrorCode::kInvalidArgument);
  auto empty = writer->map_code(kPage, AddressWindow{0x200000, 0x100000});
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code, ErrorCode::kInvalidArgument);
  // A window that is one existing mapping has no room.
  auto own = find_mapping(anchor);
  ASSERT_TRUE(own);
  auto full = writer->map_code(kPage, AddressWindow{own->start, own->end});
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, ErrorCode::kOutOfMemory);
  auto huge = writer->map_code(SIZE_MAX);
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.error().code, ErrorCode::kInvalidArgument);
}

TEST_P(CodeWriterMethodTest, UnmapOfARegionItDidNotMapIsRefused) {
  auto region = writer->map_code(kPage);
  ASSERT_TRUE(region);
  auto r = writer->unmap_code(CodeRegion{region->address + kPage, kPage});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kNotOwned);
  EXPECT_TRUE(find_mapping(region->address));
  EXPECT_TRUE(writer->unmap_code(*region));
  auto twice = writer->unmap_code(*region);
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().code, ErrorCode::kNotOwned);
}

INSTANTIATE_TEST_SUITE_P(AllMethods, CodeWriterMethodTest,
                         ::testing::Values(WriteMethod::kProcMem, WriteMethod::kDualMap, WriteMethod::kMprotect),
                         [](const auto& case_info) {
                           std::string name(to_string(case_info.param));
                           std::erase(name, '-');
                           return name;
                         });

TEST(CodeWriterDualMap, RefusesMemoryItDidNotMap) {
  auto dual = CodeWriter::create(WriteMethod::kDualMap);
  auto proc = CodeWriter::create(WriteMethod::kProcMem);
  if (!dual || !proc) GTEST_SKIP() << "needs both dual-map and proc-mem on this host";
  auto region = (*proc)->map_code(kPage);
  ASSERT_TRUE(region);
  test::MemorySnapshot before(region->address, region->size);
  const std::uint8_t bytes[] = {0xC3};
  auto r = (*dual)->write(region->address, bytes);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kNotOwned);
  EXPECT_EQ(before.differences(), "");
}

TEST(CodeWriterDualMap, CodeViewIsSharedReadExecuteAndNeverWritable) {
  auto dual = CodeWriter::create(WriteMethod::kDualMap);
  if (!dual) GTEST_SKIP() << "dual-map unavailable: " << dual.error().describe();
  auto region = (*dual)->map_code(kPage);
  ASSERT_TRUE(region);
  auto m = find_mapping(region->address);
  ASSERT_TRUE(m);
  EXPECT_TRUE(m->shared && m->executable && !m->writable);
  EXPECT_NE(m->path.find("punch-code"), std::string::npos) << m->path;
}

}  // namespace
}  // namespace punch::runtime

namespace punch::runtime {
namespace {

// Checks CodeWriter::global() against PUNCH_WRITE_METHOD as this process got it:
// unset or "auto" picks what the probe picks, a method name gives exactly that
// method (mprotect under MDWE: an error naming MDWE), anything else is an error
// naming the value.
TEST(CodeWriterGlobal, FollowsPunchWriteMethod) {
  const char* env = std::getenv("PUNCH_WRITE_METHOD");
  auto global = CodeWriter::global();
  const std::string name = env && *env ? env : "auto";
  auto parsed = parse_write_method(name);
  if (!parsed) {
    ASSERT_FALSE(global);
    EXPECT_NE(global.error().message.find(name), std::string::npos) << global.error().message;
    return;
  }
  const std::optional<WriteMethod> expected = *parsed ? *parsed : probe().auto_method;
  if (expected == WriteMethod::kMprotect && probe().mdwe) {
    // Under MDWE mprotect cannot make code executable again: refused, saying why.
    ASSERT_FALSE(global) << "the mprotect method was chosen under MDWE";
    EXPECT_NE(global.error().message.find("PUNCH_WRITE_METHOD=" + name), std::string::npos) << global.error().message;
    EXPECT_NE(global.error().message.find("MDWE"), std::string::npos) << global.error().message;
    return;
  }
  ASSERT_TRUE(global) << global.error().describe();
  EXPECT_EQ((*global)->method(), *expected);
}

// Runs the test above in a fresh copy of this binary with PUNCH_WRITE_METHOD set.
int run_global_test_with(const char* value) {
  auto child = test::run_in_child([value] {
    ::setenv("PUNCH_WRITE_METHOD", value, 1);
    ::execl("/proc/self/exe", "punch_runtime_tests", "--gtest_filter=CodeWriterGlobal.FollowsPunchWriteMethod",
            static_cast<char*>(nullptr));
    return 127;
  });
  if (child.exit_code != 0) std::printf("%s\n", child.describe().c_str());
  return child.exit_code;
}

TEST(CodeWriterGlobal, EnvironmentChoosesTheMethodOrFailsClearly) {
  EXPECT_EQ(run_global_test_with("dual-map"), 0);
  EXPECT_EQ(run_global_test_with("mprotect"), 0);
  EXPECT_EQ(run_global_test_with("proc-mem"), 0);
  EXPECT_EQ(run_global_test_with("writable"), 0);  // The inner test expects the error.
}

}  // namespace
}  // namespace punch::runtime
