// safe_read: reading any address returns bytes or an error, never SIGSEGV.
#include <punch/runtime/safe_read.hpp>

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

namespace punch::runtime {
namespace {

const std::size_t kPage = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));

TEST(SafeRead, ReadsMappedMemory) {
  const char text[] = "punch through";
  std::uint8_t out[sizeof text];
  auto n = safe_read(reinterpret_cast<std::uintptr_t>(text), out);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, sizeof text);
  EXPECT_EQ(std::memcmp(out, text, sizeof text), 0);
}

TEST(SafeRead, PartlyMappedRangeGivesTheReadablePrefix) {
  auto* p = static_cast<std::uint8_t*>(
      ::mmap(nullptr, 2 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(p, MAP_FAILED);
  std::memset(p, 0xAB, kPage);
  ASSERT_EQ(::munmap(p + kPage, kPage), 0);
  std::uint8_t out[64];
  auto n = safe_read(reinterpret_cast<std::uintptr_t>(p + kPage - 10), out);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 10u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(out[i], 0xAB);

  auto exact = safe_read_exact(reinterpret_cast<std::uintptr_t>(p + kPage - 10), 64);
  ASSERT_FALSE(exact);
  EXPECT_EQ(exact.error().code, ErrorCode::kNotMapped);
  EXPECT_NE(exact.error().message.find(at(p + kPage)), std::string::npos) << exact.error().message;
  ::munmap(p, kPage);
}

TEST(SafeRead, UnmappedAddressIsAnErrorNamingIt) {
  void* p = ::mmap(nullptr, kPage, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  ::munmap(p, kPage);
  std::uint8_t out[8];
  auto n = safe_read(reinterpret_cast<std::uintptr_t>(p), out);
  ASSERT_FALSE(n);
  EXPECT_EQ(n.error().code, ErrorCode::kNotMapped);
  EXPECT_NE(n.error().message.find(at(p)), std::string::npos);
  auto null = safe_read(0, out);
  ASSERT_FALSE(null);
  EXPECT_EQ(null.error().code, ErrorCode::kNotMapped);
}

TEST(SafeRead, EmptyAndOverflowingReads) {
  std::uint8_t out[2];
  auto empty = safe_read(0, std::span(out, 0));
  ASSERT_TRUE(empty);
  EXPECT_EQ(*empty, 0u);
  auto overflow = safe_read(UINTPTR_MAX, out);
  ASSERT_FALSE(overflow);
  EXPECT_EQ(overflow.error().code, ErrorCode::kInvalidArgument);
}

TEST(SafeRead, ExactReadOfMappedBytes) {
  static const std::uint8_t data[5] = {1, 2, 3, 4, 5};
  auto bytes = safe_read_exact(reinterpret_cast<std::uintptr_t>(data), sizeof data);
  ASSERT_TRUE(bytes);
  EXPECT_EQ(*bytes, std::vector<std::uint8_t>(data, data + 5));
}

}  // namespace
}  // namespace punch::runtime
