// Thread fix-up: a thread stopped between the instructions of a multi-instruction
// site is moved to the out-of-line copy before the site's bytes change.
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "live_test_support.hpp"
#include "memory_snapshot.hpp"

namespace punch::patcher {
namespace {

using namespace asmjit;

// int park(int* words): mov eax,7; spin: add dword [rdi+4],1; cmp dword [rdi],0; je spin; ret
// The whole [entry, ret) is one 14-byte site: a caller spins strictly inside it until words[0] != 0.
constexpr std::size_t kParkSite = 14;

std::uintptr_t emit_park() {
  return test::emit([](x86::Assembler& a) {
    Label spin = a.newLabel();
    a.mov(x86::eax, 7);
    a.bind(spin);
    a.add(x86::dword_ptr(x86::rdi, 4), 1);
    a.cmp(x86::dword_ptr(x86::rdi), 0);
    a.short_().je(spin);
    a.ret();
  });
}

// The hook: jmp to `int alt() { return 9; }`, then int3 over the rest: a thread left
// inside the old instructions would execute int3 that is no site and die.
std::vector<std::uint8_t> hook_bytes(std::uintptr_t park, std::uintptr_t alt) {
  auto b = test::jmp_rel32(park, alt);
  b.resize(kParkSite, 0xCC);
  return b;
}

struct Parked {
  alignas(8) std::atomic<int> words[2] = {0, 0};  // [0]: release flag, [1]: spin count.
  std::atomic<int> result{0};
  std::thread thread;

  // Starts a thread running park(words) (with every signal blocked if asked) and
  // returns once it is spinning inside the site.
  void start(std::uintptr_t park, bool block_signals) {
    thread = std::thread([this, park, block_signals] {
      if (block_signals) {
        sigset_t all;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, nullptr);
      }
      result = test::as<int (*)(void*)>(park)(words);
    });
    while (words[1].load() == 0) std::this_thread::yield();
  }
  int finish() {
    words[0] = 1;
    thread.join();
    return result;
  }
};

// The deterministic proof that the fix-up runs: the parked thread survives the
// hook and finishes the OLD code (7) from the copy; later calls run the new code (9).
TEST(LiveFixup, ThreadParkedInsideAPrologueIsMovedToTheCopy) {
  const std::uintptr_t park = emit_park();
  const std::uintptr_t alt = test::emit_return(9);
  Parked parked;
  parked.start(park, false);
  const LiveStats before = live_stats();
  Transaction tx;
  ASSERT_TRUE(tx.add(test::site(park, test::bytes_at(park, kParkSite), hook_bytes(park, alt))));
  auto committed = tx.commit();
  ASSERT_TRUE(committed) << committed.error().describe();
  const LiveStats after = live_stats();
  EXPECT_GE(after.fixup_rounds, before.fixup_rounds + 1);
  EXPECT_GE(after.threads_moved, before.threads_moved + 1);
  const int spins = parked.words[1].load();
  while (parked.words[1].load() == spins) std::this_thread::yield();  // Still spinning, now in the copy.
  EXPECT_EQ(parked.finish(), 7);
  std::atomic<int> released[2] = {1, 0};
  EXPECT_EQ(test::as<int (*)(void*)>(park)(released), 9);

  // Reverting moves nobody (no thread inside the hook bytes) and restores the old code.
  ASSERT_TRUE(tx.revert());
  EXPECT_EQ(test::as<int (*)(void*)>(park)(released), 7);
}

// A thread that blocks every signal while running inside the site cannot be
// moved or proven safe: the commit fails, names it, and changes nothing.
TEST(LiveFixup, UnansweringThreadInsideTheSiteFailsTheCommitCleanly) {
  const std::uintptr_t park = emit_park();
  const std::uintptr_t alt = test::emit_return(9);
  Parked parked;
  parked.start(park, true);
  const test::MemorySnapshot code_before(park, kParkSite + 1);
  TransactionOptions options;
  options.thread_timeout = std::chrono::milliseconds(100);
  Transaction tx(options);
  ASSERT_TRUE(tx.add(test::site(park, test::bytes_at(park, kParkSite), hook_bytes(park, alt))));
  auto committed = tx.commit();
  ASSERT_FALSE(committed);
  EXPECT_EQ(committed.error().code, ErrorCode::kTimeout) << committed.error().describe();
  EXPECT_NE(committed.error().message.find("thread "), std::string::npos) << committed.error().describe();
  // The thread cannot be held still, so no byte was ever written.
  EXPECT_NE(committed.error().message.find("nothing changed"), std::string::npos) << committed.error().describe();
  EXPECT_TRUE(code_before.unchanged()) << code_before.differences();
  EXPECT_FALSE(tx.committed());
  EXPECT_EQ(parked.finish(), 7);
}

// A thread that blocks every signal but sleeps in a system call outside the site is accepted.
TEST(LiveFixup, ThreadBlockedInASyscallOutsideTheSiteIsAccepted) {
  const std::uintptr_t park = emit_park();
  const std::uintptr_t alt = test::emit_return(9);
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  std::atomic<bool> blocking{false};
  std::thread sleeper([&] {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    blocking = true;
    char c;
    (void)!::read(pipe_fds[0], &c, 1);
  });
  while (!blocking) std::this_thread::yield();
  const LiveStats before = live_stats();
  TransactionOptions options;
  options.thread_timeout = std::chrono::milliseconds(100);
  options.hold_threads = false;  // The fix-up round by signals (a held change refuses such a thread).
  Transaction tx(options);
  ASSERT_TRUE(tx.add(test::site(park, test::bytes_at(park, kParkSite), hook_bytes(park, alt))));
  // The sleeper may not have reached read() yet when the first round runs; the commit then
  // fails cleanly (not provably blocked) and a retry sees it blocked.
  Status committed;
  for (int attempt = 0; attempt < 50; ++attempt) {
    committed = tx.commit();
    if (committed || committed.error().code != ErrorCode::kTimeout) break;
  }
  ASSERT_TRUE(committed) << committed.error().describe();
  EXPECT_GE(live_stats().blocked_threads_accepted, before.blocked_threads_accepted + 1);
  std::atomic<int> released[2] = {1, 0};
  EXPECT_EQ(test::as<int (*)(void*)>(park)(released), 9);
  ASSERT_TRUE(tx.revert());
  ASSERT_EQ(::write(pipe_fds[1], "x", 1), 1);
  sleeper.join();
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
}

// A `call` as the last old instruction is emulated in the copy with the ORIGINAL
// return address, so a thread moved to the copy returns to the site's end, never
// into the copy (which could then never be freed).
TEST(LiveFixup, FinalCallInTheCopyPushesTheOriginalReturnAddress) {
  // f(words): mov eax,7; spin: add [rdi+4],1; cmp [rdi],0; je spin; call getret; ret
  // getret: mov rax,[rsp]; ret        -> f returns the return address its call pushed.
  // (The spin loop excludes the site's first byte: the spinning thread is strictly inside.)
  const std::uintptr_t f = test::emit([](x86::Assembler& a) {
    Label spin = a.newLabel(), getret = a.newLabel();
    a.mov(x86::eax, 7);
    a.bind(spin);
    a.add(x86::dword_ptr(x86::rdi, 4), 1);
    a.cmp(x86::dword_ptr(x86::rdi), 0);
    a.short_().je(spin);
    a.call(getret);
    a.ret();
    a.bind(getret);
    a.mov(x86::rax, x86::qword_ptr(x86::rsp));
    a.ret();
  });
  constexpr std::size_t kSite = 5 + 4 + 3 + 2 + 5;
  ASSERT_EQ(test::bytes_at(f + 14, 1)[0], 0xE8);
  std::atomic<std::uintptr_t> seen{0};
  alignas(8) std::atomic<int> words[2] = {0, 0};
  std::thread thread([&] { seen = test::as<std::uintptr_t (*)(void*)>(f)(words); });
  while (words[1].load() == 0) std::this_thread::yield();
  const std::uintptr_t alt = test::emit_return(9);
  auto hook = test::jmp_rel32(f, alt);
  hook.resize(kSite, 0xCC);
  const LiveStats before = live_stats();
  Transaction tx;
  ASSERT_TRUE(tx.add(test::site(f, test::bytes_at(f, kSite), hook)));
  auto committed = tx.commit();
  ASSERT_TRUE(committed) << committed.error().describe();
  EXPECT_GE(live_stats().threads_moved, before.threads_moved + 1);
  words[0] = 1;
  thread.join();
  EXPECT_EQ(seen.load(), f + kSite);
  ASSERT_TRUE(tx.revert());
}

}  // namespace
}  // namespace punch::patcher
