// Out-of-line copies must lie within rel32 reach of the data their code reads.
// Two sites of one transaction whose new code reads data near the edge of
// rel32 reach in opposite directions share no such window; undoing them live
// still works (each site's copy is placed within its own reach), and memory
// is exactly as before. New code whose only possible copy window has no room
// at all is refused at commit, not at the revert. Copies that read no data
// then share one block anywhere, and threads run them.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include <punch/runtime/code_heap.hpp>

#include "code_page.hpp"
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

// When the copies share no window, the copies that read no data share one
// block placed anywhere, each at its offset in the batch's image. A third
// site of the transaction above, in a function that threads call all along:
// its entry `push rbx; mov ebx, edi; mov eax, ebx` becomes `lea eax, [rdi+1];
// ret; nop` (both return x+1). Reverting it needs a copy of that new code,
// in the shared block; threads that meet the site during a revert are sent
// there (trap) or moved there (fix-up round), and every call still returns x+1.
TEST(LiveCopyPlacement, CopiesThatReadNoDataShareABlockAnywhereAndThreadsRunThem) {
  const std::uintptr_t f = test::emit([](asmjit::x86::Assembler& a) {
    for (int i = 0; i < 128; ++i) a.nop();
    a.ret();
  });
  const std::uintptr_t g = test::emit_plus_one_with_prologue();
  ASSERT_NE(f, 0u);
  ASSERT_NE(g, 0u);
  const std::vector<std::uint8_t> f_before = test::bytes_at(f, 129), g_before = test::bytes_at(g, 9);
  const std::vector<std::uint8_t> nops(7, 0x90), lea_ret{0x8D, 0x47, 0x01, 0xC3, 0x90};
  TransactionOptions options;
  options.hold_threads = false;  // The trap path: callers run on and meet the sites in flight.
  Transaction tx(options);
  ASSERT_TRUE(tx.add(test::site(f, nops, add_rip_relative(0x7ffffff0))));
  ASSERT_TRUE(tx.add(test::site(f + 64, nops, add_rip_relative(-0x7ffffff0))));
  ASSERT_TRUE(tx.add(test::site(g, test::bytes_at(g, 5), lea_ret)));

  test::Callers callers(2, [g](std::uint64_t k) {
    const int x = static_cast<int>(k & 0xffff);
    return test::as<int (*)(int)>(g)(x) == x + 1;
  });
  test::SlowSyncs slow;
  std::uint64_t sent_to_copy = 0;  // Threads trapped at g or moved out of it during reverts.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  int flips = 0;
  for (; flips < 200 || (sent_to_copy < 5 && std::chrono::steady_clock::now() < deadline); ++flips) {
    auto committed = tx.commit();
    ASSERT_TRUE(committed) << committed.error().describe();
    const LiveStats before = live_stats();
    auto reverted = tx.revert();
    ASSERT_TRUE(reverted) << reverted.error().describe();
    const LiveStats after = live_stats();
    sent_to_copy += (after.traps_redirected - before.traps_redirected) + (after.threads_moved - before.threads_moved);
  }
  callers.join();
  EXPECT_EQ(callers.wrong.load(), 0u);
  EXPECT_GE(sent_to_copy, 5u) << "no thread went through g's copy in " << flips << " reverts";
  EXPECT_EQ(test::bytes_at(f, 129), f_before);
  EXPECT_EQ(test::bytes_at(g, 9), g_before);
}

TEST(LiveCopyPlacement, NewCodeWhoseCopyWindowHasNoRoomIsRefusedAtCommit) {
  // 2 GiB + 128 KiB reserved (PROT_NONE) with one code page near its top: every
  // address within reach of both the page and data 2 GiB below it is reserved.
  const std::size_t reserved_size = 0x80020000;
  void* reserved = ::mmap(nullptr, reserved_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(reserved, MAP_FAILED);
  const auto r = reinterpret_cast<std::uintptr_t>(reserved);
  const std::uintptr_t page = r + 0x80010000;
  std::vector<std::uint8_t> code(7, 0x90);
  code.push_back(0xC3);
  ASSERT_TRUE(test::map_code_at(page, code));
  const std::vector<std::uint8_t> before = test::bytes_at(page, 8);

  Transaction tx;
  const disasm::FunctionExtent extent{page, page + 8, disasm::FunctionExtent::Source::kCaller};
  ASSERT_TRUE(tx.add(Site{page, std::vector<std::uint8_t>(7, 0x90), add_rip_relative(-0x7ffffff0), extent}));
  auto committed = tx.commit();
  ASSERT_FALSE(committed) << "committed new code that no copy could undo live";
  EXPECT_EQ(committed.error().code, ErrorCode::kCannotRelocate) << committed.error().describe();
  EXPECT_NE(committed.error().message.find("no memory within reach"), std::string::npos)
      << committed.error().describe();
  EXPECT_EQ(test::bytes_at(page, 8), before);
  ::munmap(reserved, reserved_size);
}

}  // namespace
}  // namespace punch::patcher
