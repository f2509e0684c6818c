// The trap handlers claim only traps at punch's sites and chain every other one
// to the handler installed before them, with SIG_DFL semantics kept. Each case
// runs in a fresh process (a threadsafe death test re-executes the binary), so
// the foreign handler really is installed before punch's.
#include <signal.h>
#include <ucontext.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>

#include "live_test_support.hpp"
#include "memory_snapshot.hpp"

namespace punch::patcher {
namespace {

using namespace asmjit;

std::atomic<int> g_foreign_traps{0};

void foreign_trap_handler(int, siginfo_t*, void*) { g_foreign_traps.fetch_add(1); }

// Skips a hlt (1 byte) that is not punch's, as an application's own SIGSEGV handler might.
void foreign_segv_handler(int, siginfo_t* info, void* context) {
  auto* uc = static_cast<ucontext_t*>(context);
  auto* rip = reinterpret_cast<const std::uint8_t*>(uc->uc_mcontext.gregs[REG_RIP]);
  if (info->si_code == SI_KERNEL && *rip == 0xF4) {
    uc->uc_mcontext.gregs[REG_RIP] += 1;
    g_foreign_traps.fetch_add(1);
    return;
  }
  std::_Exit(90);  // A real fault: not expected here.
}

void install(int sig, void (*handler)(int, siginfo_t*, void*)) {
  struct sigaction sa {};
  sa.sa_sigaction = handler;
  sa.sa_flags = SA_SIGINFO;
  ::sigaction(sig, &sa, nullptr);
}

// Commits and reverts one site (installing punch's handler for `trap`); exits with `code` on failure.
void patch_once(TrapInstruction trap, int code) {
  const std::uintptr_t f = test::emit_return(1);
  TransactionOptions options;
  options.trap = trap;
  Transaction tx(options);
  if (!tx.add(test::site(f, test::mov_eax(1), test::mov_eax(2))) || !tx.commit() || test::as<int (*)()>(f)() != 2 ||
      !tx.revert())
    std::_Exit(code);
}

// `int3; mov eax, 5; ret` (or hlt): a trap that is no site.
std::uintptr_t emit_trap_then_return(bool hlt) {
  return test::emit([hlt](x86::Assembler& a) {
    hlt ? a.hlt() : a.int3();
    a.mov(x86::eax, 5);
    a.ret();
  });
}

class LiveTrap : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

TEST_F(LiveTrap, ForeignSigtrapHandlerStillSeesTrapsThatAreNotSites) {
  EXPECT_EXIT(
      {
        install(SIGTRAP, foreign_trap_handler);
        patch_once(TrapInstruction::kInt3, 10);
        const std::uint64_t chained = live_stats().traps_chained;
        const std::uintptr_t f = emit_trap_then_return(false);
        if (test::as<int (*)()>(f)() != 5) std::_Exit(11);
        if (g_foreign_traps.load() != 1) std::_Exit(12);
        if (live_stats().traps_chained != chained + 1) std::_Exit(13);
        patch_once(TrapInstruction::kInt3, 14);  // Punch keeps working alongside.
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST_F(LiveTrap, DefaultSigtrapActionIsKeptForTrapsThatAreNotSites) {
  EXPECT_EXIT(
      {
        patch_once(TrapInstruction::kInt3, 10);
        const std::uintptr_t f = emit_trap_then_return(false);
        test::as<int (*)()>(f)();
        std::_Exit(0);  // Not reached: SIGTRAP's default action ends the process.
      },
      ::testing::KilledBySignal(SIGTRAP), "");
}

TEST_F(LiveTrap, ForeignSigsegvHandlerStillSeesHltThatIsNotASite) {
  EXPECT_EXIT(
      {
        install(SIGSEGV, foreign_segv_handler);
        patch_once(TrapInstruction::kHlt, 10);
        const std::uintptr_t f = emit_trap_then_return(true);
        if (test::as<int (*)()>(f)() != 5) std::_Exit(11);
        if (g_foreign_traps.load() != 1) std::_Exit(12);
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

// A handler installed over punch's would see punch's traps first: commits refuse, memory unchanged.
TEST_F(LiveTrap, HandlerReplacedAfterPunchIsAConflict) {
  EXPECT_EXIT(
      {
        patch_once(TrapInstruction::kInt3, 10);
        install(SIGTRAP, foreign_trap_handler);
        const std::uintptr_t f = test::emit_return(1);
        const test::MemorySnapshot before(f, 6);
        Transaction tx;
        if (!tx.add(test::site(f, test::mov_eax(1), test::mov_eax(2)))) std::_Exit(11);
        auto committed = tx.commit();
        if (committed || committed.error().code != ErrorCode::kConflict) std::_Exit(12);
        if (!before.unchanged()) std::_Exit(13);
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace punch::patcher
