// A patch returns only after every thread it sent into an out-of-line copy
// has left it. A copy ends in jumps to whatever the old code jumped to (the
// old target of a retargeted jmp, a removed hook's trampoline), and a user
// frees that code once the patch returned and no thread is inside it: a
// thread still in the copy would then jump into freed code (the 10-minute
// soak died of exactly this: an int3-filled freed function).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <punch/patcher/transaction.hpp>
#include <punch/runtime/threads.hpp>

#include "live_test_support.hpp"

namespace punch::patcher {
namespace {

using namespace std::chrono_literals;
namespace x86 = asmjit::x86;

TEST(LiveDrain, CommitReturnsOnlyAfterThreadsMovedIntoACopyLeftIt) {
  static std::atomic<std::uint8_t> release{0};
  static std::atomic<std::uint8_t> reached_old_target{0};
  release = 0;
  reached_old_target = 0;

  // B: the new target. F: jmp start; A (the old target, outside the site):
  // note it was reached, return 1; start: mov rcx, &release; site: { nop;
  // spin: cmp byte [rcx], 0; je spin; jmp A }.
  const std::uintptr_t b = test::emit_return(2);
  std::size_t site_offset = 0;
  const std::uintptr_t f = test::emit([&](x86::Assembler& as) {
    asmjit::Label start = as.newLabel(), old_target = as.newLabel(), spin = as.newLabel();
    as.jmp(start);
    as.bind(old_target);
    as.mov(x86::rax, asmjit::imm(reinterpret_cast<std::uint64_t>(&reached_old_target)));
    as.mov(x86::byte_ptr(x86::rax), 1);
    as.mov(x86::eax, 1);
    as.ret();
    as.bind(start);
    as.mov(x86::rcx, asmjit::imm(reinterpret_cast<std::uint64_t>(&release)));  // 10 bytes
    site_offset = as.offset();
    as.nop();  // 1 byte: the spinning thread is always strictly inside the site, never at its first byte
    as.bind(spin);
    as.cmp(x86::byte_ptr(x86::rcx), 0);  // 3 bytes
    as.short_().je(spin);                // 2 bytes
    as.long_().jmp(old_target);          // 5 bytes, back to A: out of the site
  });
  ASSERT_TRUE(b && f);
  const std::uintptr_t site = f + site_offset;
  const std::vector<std::uint8_t> old_bytes = test::bytes_at(site, 11);
  ASSERT_EQ(old_bytes[1], 0x80) << "unexpected encoding of the spin loop";
  ASSERT_EQ(old_bytes[6], 0xE9) << "asmjit did not emit jmp rel32";

  // A thread spins strictly inside the site, so the fix-up round moves it
  // into the copy of the old code, where it keeps spinning until released,
  // then jumps to A.
  std::atomic<int> result{0};
  std::thread caller([&] { result = test::as<int (*)()>(f)(); });
  for (;;) {  // Until it is seen inside the site.
    runtime::CodeRange ranges[] = {{site + 1, site + 11}};
    auto in_use = runtime::ranges_in_use(ranges, 5000ms);
    ASSERT_TRUE(in_use) << in_use.error().describe();
    if ((*in_use)[0]) break;
    std::this_thread::sleep_for(1ms);
  }
  std::thread releaser([] {
    std::this_thread::sleep_for(200ms);
    release = 1;
  });

  const LiveStats before = live_stats();
  TransactionOptions options;
  options.thread_timeout = 30s;  // The drain waits for the releaser, however loaded the machine is.
  Transaction tx(options);
  std::vector<std::uint8_t> new_bytes = test::jmp_rel32(site, b);
  new_bytes.insert(new_bytes.end(), {0x66, 0x0F, 0x1F, 0x44, 0x00, 0x00});  // 6-byte nop
  ASSERT_TRUE(tx.add(test::site(site, old_bytes, new_bytes)));
  auto committed = tx.commit();
  ASSERT_TRUE(committed) << committed.error().describe();

  // The caller went into the copy, and had left it (run A) before commit
  // returned: freeing A now, once no thread is inside A, is safe.
  const LiveStats after = live_stats();
  EXPECT_GT(after.threads_moved, before.threads_moved) << "the fix-up round did not move the spinning thread";
  EXPECT_EQ(reached_old_target.load(), 1) << "commit returned while a thread was still inside its copy";
  releaser.join();
  caller.join();
  EXPECT_EQ(result.load(), 1);
  EXPECT_EQ(test::as<int (*)()>(f)(), 2);
}

}  // namespace
}  // namespace punch::patcher
