// Out-of-line copies must lie within rel32 reach of the data their code reads.
// Two sites of one transaction whose new code reads data near the edge of
// rel32 reach in opposite directions share no such window; undoing them live
// still works (each site's copy is placed within its own reach), and memory
// is exactly as before. New code whose only possible copy window has no room
// at all is refused at commit, not at the revert.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstring>

#include <punch/runtime/code_heap.hpp>

#include "live_test_support.hpp"

namespace punch::patcher {
namespace {

// `add byte [rip + disp], bl; nop` (7 bytes): reads and writes disp bytes after itself.
std::vector<std::uint8_t> add_rip_relative(std::int32_t disp) {
  std::vector<std::uint8_t> b{0x00, 0x1D, 0, 0, 0, 0, 0x90};
  std::memcpy(b.data() + 2, &disp, 4);
  return b;
}

TEST(LiveCopyPlacement, SitesReadingDataFarApartInOppositeDirectionsAreUndoneLive) {
  // A function that is never called: 128 one-byte nops, then ret.
  const std::uintptr_t f = test::emit([](asmjit::x86::Assembler& a) {
    for (int i = 0; i < 128; ++i) a.nop();
    a.ret();
  });
  ASSERT_NE(f, 0u);
  const std::vector<std::uint8_t> nops(7, 0x90);
  const std::vector<std::uint8_t> before = test::bytes_at(f, 129);
  // Site A reads almost 2 GiB ahead, site B (64 bytes on) almost 2 GiB behind:
  // a copy of A must lie more than 64 KiB after A, a copy of B more than 64 KiB before B.
  Transaction tx;
  ASSERT_TRUE(tx.add(test::site(f, nops, add_rip_relative(0x7ffffff0))));
  ASSERT_TRUE(tx.add(test::site(f + 64, nops, add_rip_relative(-0x7ffffff0))));
  auto committed = tx.commit();
  ASSERT_TRUE(committed) << committed.error().describe();
  EXPECT_EQ(test::bytes_at(f, 7), add_rip_relative(0x7ffffff0));

  // The revert moves threads out of the new code (two instructions each), so it needs both copies.
  auto reverted = tx.revert();
  ASSERT_TRUE(reverted) << reverted.error().describe();
  EXPECT_EQ(test::bytes_at(f, 129), before);
}

TEST(LiveCopyPlacement, NewCodeWhoseCopyWindowHasNoRoomIsRefusedAtCommit) {
  // 2 GiB + 128 KiB reserved (PROT_NONE) with one code page near its top: every
  // address within reach of both the page and data 2 GiB below it is reserved.
  const std::size_t reserved_size = 0x80020000;
  void* reserved = ::mmap(nullptr, reserved_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(reserved, MAP_FAILED);
  const auto r = reinterpret_cast<std::uintptr_t>(reserved);
  const std::uintptr_t page = r + 0x80010000;
  ASSERT_EQ(::mprotect(reinterpret_cast<void*>(page), 4096, PROT_READ | PROT_WRITE), 0);
  std::memset(reinterpret_cast<void*>(page), 0x90, 7);
  reinterpret_cast<std::uint8_t*>(page)[7] = 0xC3;
  ASSERT_EQ(::mprotect(reinterpret_cast<void*>(page), 4096, PROT_READ | PROT_EXEC), 0);
  const std::vector<std::uint8_t> before = test::bytes_at(page, 8);

  Transaction tx;
  const disasm::FunctionExtent extent{page, page + 8, disasm::FunctionExtent::Source::kCaller};
  ASSERT_TRUE(tx.add(Site{page, std::vector<std::uint8_t>(7, 0x90), add_rip_relative(-0x7ffffff0), extent}));
  auto committed = tx.commit();
  ASSERT_FALSE(committed) << "committed new code that no copy could undo live";
  EXPECT_EQ(committed.error().code, ErrorCode::kCannotRelocate) << committed.error().describe();
  EXPECT_NE(committed.error().message.find("no memory within reach"), std::string::npos) << committed.error().describe();
  EXPECT_EQ(test::bytes_at(page, 8), before);
  ::munmap(reserved, reserved_size);
}

}  // namespace
}  // namespace punch::patcher
