// runtime maps: query_mapping finds the one mapping holding an address with
// the PROCMAP_QUERY ioctl and, where that is missing, by parsing the file;
// both agree with each other and with read_mappings; the parser reads every
// field of a line; the ioctl's descriptor is reopened in a forked child.
#include <punch/runtime/maps.hpp>

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

#include "child_process.hpp"

namespace punch::runtime {
namespace {

const std::size_t kPage = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));

bool ioctl_available() {
  return static_cast<bool>(query_mapping(reinterpret_cast<std::uintptr_t>(&kPage), MapsQuery::kIoctl));
}

void expect_same(const Mapping& a, const Mapping& b, const char* what) {
  EXPECT_EQ(a.start, b.start) << what;
  EXPECT_EQ(a.end, b.end) << what;
  EXPECT_EQ(a.readable, b.readable) << what;
  EXPECT_EQ(a.writable, b.writable) << what;
  EXPECT_EQ(a.executable, b.executable) << what;
  EXPECT_EQ(a.shared, b.shared) << what;
  EXPECT_EQ(a.offset, b.offset) << what;
  EXPECT_EQ(a.device, b.device) << what;
  EXPECT_EQ(a.inode, b.inode) << what;
  EXPECT_EQ(a.path, b.path) << what;
}

// Mappings of known shape, page by page: a PROT_NONE guard (so the next page
// merges with nothing), private R+X anonymous, a hole, two pages shared R+W anonymous.
struct Layout {
  std::uint8_t* base = nullptr;
  Layout() {
    void* p = ::mmap(nullptr, 5 * kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return;
    base = static_cast<std::uint8_t*>(p);
    // Mapped read+execute from the start: under MDWE mprotect may not add PROT_EXEC.
    ::mmap(base + kPage, kPage, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    ::munmap(base + 2 * kPage, kPage);
    ::mmap(base + 3 * kPage, 2 * kPage, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  }
  ~Layout() {
    if (base) ::munmap(base, 5 * kPage);
  }
  std::uintptr_t at(std::size_t page, std::size_t offset = 0) const {
    return reinterpret_cast<std::uintptr_t>(base) + page * kPage + offset;
  }
};

TEST(Maps, BothQueriesFindKnownMappingsWithTheirPermissionsAndBounds) {
  Layout layout;
  ASSERT_NE(layout.base, nullptr);
  std::vector<MapsQuery> methods{MapsQuery::kParse, MapsQuery::kAuto};
  if (ioctl_available()) methods.push_back(MapsQuery::kIoctl);
  for (MapsQuery how : methods) {
    auto code = query_mapping(layout.at(1, 123), how);
    ASSERT_TRUE(code) << code.error().describe();
    EXPECT_EQ(code->start, layout.at(1));
    EXPECT_EQ(code->end, layout.at(2));
    EXPECT_TRUE(code->readable && code->executable && !code->writable && !code->shared);
    EXPECT_EQ(code->inode, 0u);

    auto hole = query_mapping(layout.at(2, 5), how);
    ASSERT_FALSE(hole);
    EXPECT_EQ(hole.error().code, ErrorCode::kNotMapped);
    EXPECT_NE(hole.error().message.find(at(layout.at(2, 5))), std::string::npos) << hole.error().message;

    auto shared = query_mapping(layout.at(4, kPage - 1), how);  // Last byte.
    ASSERT_TRUE(shared) << shared.error().describe();
    EXPECT_EQ(shared->start, layout.at(3));
    EXPECT_EQ(shared->end, layout.at(5));
    EXPECT_TRUE(shared->readable && shared->writable && !shared->executable && shared->shared);
    EXPECT_FALSE(shared->path.empty());  // "/dev/zero (deleted)" as the kernel names shared anonymous memory.
  }
}

TEST(Maps, IoctlAndParseAgreeOnEveryMappingOfTheProcess) {
  if (!ioctl_available()) GTEST_SKIP() << "PROCMAP_QUERY needs Linux 6.11 (the parse path is tested above)";
  auto all = read_mappings();
  ASSERT_TRUE(all) << all.error().describe();
  ASSERT_GT(all->size(), 5u);
  std::size_t compared = 0;
  for (const Mapping& m : *all) {
    if (m.path == "[vsyscall]") continue;  // Not a VMA of this mm: the ioctl does not report it.
    auto first = query_mapping(m.start, MapsQuery::kIoctl);
    auto last = query_mapping(m.end - 1, MapsQuery::kIoctl);
    auto parsed = query_mapping(m.start, MapsQuery::kParse);
    // Other threads (the sanitizer's, for one) may map or unmap meanwhile; skip what changed.
    if (!first || !last || !parsed || first->start != m.start || parsed->end != m.end) continue;
    expect_same(*first, m, m.path.c_str());
    expect_same(*last, m, m.path.c_str());
    expect_same(*parsed, m, m.path.c_str());
    ++compared;
  }
  EXPECT_GT(compared, all->size() / 2);
}

TEST(Maps, ParserReadsEveryFieldAndSkipsMalformedLines) {
  const char* text =
      "7f0000001000-7f0000003000 r-xp 0001a000 fd:01 1234567   /usr/lib/x86_64-linux-gnu/libc.so.6\n"
      "garbage line\n"
      "7ffd1000-7ffd2000 rw-s 00000000 00:05 99 /memfd:code (deleted)\n"
      "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n"
      "1000-2000 rwx\n"
      "555500000000-555500001000 ---p 00000000 00:00 0 ";
  auto maps = parse_mappings(text);
  ASSERT_EQ(maps.size(), 4u);
  EXPECT_EQ(maps[0].start, 0x7f0000001000u);
  EXPECT_EQ(maps[0].end, 0x7f0000003000u);
  EXPECT_TRUE(maps[0].readable && !maps[0].writable && maps[0].executable && !maps[0].shared);
  EXPECT_EQ(maps[0].offset, 0x1a000u);
  EXPECT_EQ(maps[0].device, (std::uint64_t{0xfd} << 32) | 1);
  EXPECT_EQ(maps[0].inode, 1234567u);
  EXPECT_EQ(maps[0].path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
  EXPECT_TRUE(maps[1].shared && maps[1].writable && !maps[1].executable);
  EXPECT_EQ(maps[1].device, (std::uint64_t{0} << 32) | 5);
  EXPECT_EQ(maps[1].inode, 99u);
  EXPECT_EQ(maps[1].path, "/memfd:code (deleted)");  // Spaces inside a path are kept.
  EXPECT_EQ(maps[2].start, 0xffffffffff600000u);
  EXPECT_EQ(maps[2].path, "[vsyscall]");
  EXPECT_TRUE(!maps[3].readable && !maps[3].writable && !maps[3].executable);
  EXPECT_EQ(maps[3].path, "");
}

TEST(Maps, ForkedChildQueriesItsOwnAddressSpace) {
  // Open the descriptor in the parent first: the child inherits it, and it names the parent's memory.
  ASSERT_TRUE(query_mapping(reinterpret_cast<std::uintptr_t>(&kPage)));
  Layout layout;
  ASSERT_NE(layout.base, nullptr);
  auto child = test::run_in_child([&]() -> int {
    // In the child only: the code page goes away, a new page fills the hole.
    ::munmap(layout.base + kPage, kPage);
    if (::mmap(layout.base + 2 * kPage, kPage, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
      return 2;
    for (MapsQuery how : {MapsQuery::kAuto, MapsQuery::kParse}) {
      auto gone = query_mapping(layout.at(1), how);
      if (gone || gone.error().code != ErrorCode::kNotMapped) {
        std::printf("unmapped page still found (%d)\n", static_cast<int>(how));
        return 3;
      }
      auto fresh = query_mapping(layout.at(2), how);
      if (!fresh || fresh->start != layout.at(2) || fresh->executable) {
        std::printf("child's new page not found (%d)\n", static_cast<int>(how));
        return 4;
      }
    }
    return 0;
  });
  EXPECT_EQ(child.exit_code, 0) << child.describe();
  // The parent's view is unchanged, through its own descriptor.
  auto code = query_mapping(layout.at(1));
  ASSERT_TRUE(code) << code.error().describe();
  EXPECT_TRUE(code->executable);
  EXPECT_FALSE(query_mapping(layout.at(2)));
}

}  // namespace
}  // namespace punch::runtime
