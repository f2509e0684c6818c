// Entries found by other hooking libraries' test cases, each hooked while a
// thread calls the function throughout and the hook is enabled and disabled
// thousands of times: the 16-byte absolute entry (its own out-of-line copy
// must work without the site's bytes), the absolute entry with no memory
// within reach of the target, a stolen call whose callee reads its return
// address, `call [rip+x]` as the last stolen instruction, and `jmp rel8` at
// the entry. Refusals leave memory exactly as it was; install publishes the
// original before any call can reach the detour.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <atomic>
#include <cstring>
#include <optional>

#include <punch/patcher/hook.hpp>
#include <punch/runtime/code_heap.hpp>

#include "code_page.hpp"
#include "hook_targets.hpp"
#include "live_test_support.hpp"
#include "memory_snapshot.hpp"

extern "C" {
long hook_target_movabs(long);      // movabs rax, 0x1122334455667788; ret
long hook_target_jmp8(long);        // jmp rel8 over ud2s inside the symbol: x + 5
long hook_target_call_first(long);  // call hook_return_address_probe; ret
long hook_target_call_slot(long);   // call [rip+slot] (the probe); ret
long hook_target_call_stack(long);  // call [rsp+8]; ret (never called)
long hook_target_twice(long);       // 2x + 1

// What hook_target_call_first/_slot call: records the return address it sees.
thread_local void* t_seen_return = nullptr;
__attribute__((noinline)) long hook_return_address_probe() {
  t_seen_return = __builtin_return_address(0);
  return 42;
}
}

namespace punch::patcher {
namespace {

constexpr long kMovabsValue = 0x1122334455667788;
constexpr int kCycles = 3000;

std::uintptr_t address_of(Fn f) { return reinterpret_cast<std::uintptr_t>(f); }

// Every detour calls the original through the variable install() published, at once.
Fn g_original = nullptr;
long plus_one(long x) { return g_original(x) + 1; }
long plus_1000(long x) { return g_original(x) + 1000; }

// Installs `detour` on `target` while one thread calls `target` and checks each
// result with `good`, then disables and enables it `cycles` times; every
// change must succeed, no call may go wrong, and removal restores the bytes.
// On the trap path (threads not held) it goes on, up to 20 s, until the
// caller met the entry in flight at least 5 times (sent to an out-of-line
// copy, or its old jump or call emulated), or the test proves nothing.
void hook_live(Fn target, Fn detour, const std::function<bool(long)>& good, HookOptions options, int cycles,
               HookEntryKind expected_kind) {
  test::MemorySnapshot before(address_of(target), 32);
  test::Callers callers(1, [&](std::uint64_t k) { return good(call(target, static_cast<long>(k & 0xff))); });
  auto hook = Hook::install(target, detour, &g_original, options);
  ASSERT_TRUE(hook) << hook.error().describe();
  EXPECT_EQ(hook->info().kind, expected_kind);
  const bool trap_path = !options.transaction.hold_threads;
  std::optional<test::SlowSyncs> slow;  // Changes stay in flight long enough to be met.
  if (trap_path) slow.emplace();
  const LiveStats start = live_stats();
  const auto met = [&] {
    const LiveStats now = live_stats();
    return (now.traps_redirected - start.traps_redirected) + (now.threads_moved - start.threads_moved) +
           (now.traps_emulated - start.traps_emulated);
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  int i = 0;
  for (; i < cycles || (trap_path && met() < 5 && std::chrono::steady_clock::now() < deadline); ++i) {
    auto off = hook->disable();
    ASSERT_TRUE(off) << "cycle " << i << ": " << off.error().describe();
    auto on = hook->enable();
    ASSERT_TRUE(on) << "cycle " << i << ": " << on.error().describe();
  }
  if (trap_path) {
    EXPECT_GE(met(), 5u) << "the caller never met the entry in flight in " << i << " cycles";
  }
  slow.reset();
  callers.join();
  EXPECT_EQ(callers.wrong.load(), 0u) << "of " << callers.calls.load() << " calls";
  auto removed = hook->remove();
  ASSERT_TRUE(removed) << removed.error().describe();
  EXPECT_EQ(before.differences(), "");
}

HookOptions absolute() {
  HookOptions options;
  options.force_absolute_entry = true;
  return options;
}

HookOptions trap_path(HookOptions options = {}) {
  options.transaction.hold_threads = false;  // Callers run on and meet the sites in flight.
  return options;
}

// The absolute entry `jmp [rip+2]; movabs rax, to` reads its target from its
// own bytes. A thread sent to the out-of-line copy while the entry is being
// rewritten must read the copy's bytes, not the site's (it crashed on the
// site's, once the original code was back).
TEST(HookEntry, AbsoluteEntryIsEnabledAndDisabledWhileAThreadCallsIt) {
  const auto good = [](long r) { return r == kMovabsValue || r == kMovabsValue + 1; };
  hook_live(hook_target_movabs, plus_one, good, absolute(), kCycles, HookEntryKind::kStolenAbsolute);
  hook_live(hook_target_movabs, plus_one, good, trap_path(absolute()), kCycles, HookEntryKind::kStolenAbsolute);

  // Installed and removed, too (each a change of the whole 16 bytes).
  test::MemorySnapshot before(address_of(hook_target_movabs), 32);
  test::Callers callers(1, [&](std::uint64_t) { return good(call(hook_target_movabs, 0)); });
  test::SlowSyncs slow;
  for (int i = 0; i < kCycles / 3; ++i) {
    auto hook = Hook::install(hook_target_movabs, plus_one, &g_original, trap_path(absolute()));
    ASSERT_TRUE(hook) << "cycle " << i << ": " << hook.error().describe();
    auto removed = hook->remove();
    ASSERT_TRUE(removed) << "cycle " << i << ": " << removed.error().describe();
  }
  callers.join();
  EXPECT_EQ(callers.wrong.load(), 0u);
  EXPECT_EQ(before.differences(), "");
}

// A code page with every address within rel32 reach of it reserved: no relay,
// trampoline or out-of-line copy can lie near it, which is what the absolute
// entry is for. `movabs rax, imm64; ret` at the page's start.
class FarPage {
 public:
  static constexpr std::size_t kReserved = (std::size_t{1} << 32) + (std::size_t{1} << 17);
  FarPage() {
    reserved_ = ::mmap(nullptr, kReserved, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (reserved_ == MAP_FAILED) return;
    page_ = reinterpret_cast<std::uintptr_t>(reserved_) + (std::size_t{1} << 31) + (std::size_t{1} << 16);
    const std::uint8_t code[16] = {0x48, 0xB8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33,
                                   0x22, 0x11, 0xC3, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC};
    ok_ = test::map_code_at(page_, code);
  }
  ~FarPage() {
    if (reserved_ != MAP_FAILED) ::munmap(reserved_, kReserved);
  }
  bool ok() const { return ok_; }
  Fn function() const { return reinterpret_cast<Fn>(page_); }
  disasm::FunctionExtent extent() const { return {page_, page_ + 11, disasm::FunctionExtent::Source::kCaller}; }

 private:
  void* reserved_ = MAP_FAILED;
  std::uintptr_t page_ = 0;
  bool ok_ = false;
};

TEST(HookEntry, AbsoluteEntryWorksWithNoMemoryWithinReach) {
  FarPage far;
  ASSERT_TRUE(far.ok());
  auto heap = runtime::CodeHeap::global();
  ASSERT_TRUE(heap);
  const auto reach = runtime::AddressWindow::rel32_reach(address_of(far.function()));
  ASSERT_FALSE((*heap)->reserve_room(16, 16, reach)) << "memory is free within reach of the page";

  HookOptions options;  // Not forced: the rel32 entry has no relay in reach, so the absolute form is chosen.
  options.function = far.extent();
  const auto good = [](long r) { return r == kMovabsValue || r == kMovabsValue + 1; };
  hook_live(far.function(), plus_one, good, options, kCycles, HookEntryKind::kStolenAbsolute);
  hook_live(far.function(), plus_one, good, trap_path(options), kCycles, HookEntryKind::kStolenAbsolute);
}

// The callee of a stolen call sees the return address it sees unhooked (the
// instruction after the call in the original function), through the
// trampoline and while the hook is switched on and off.
void expect_original_return_address(Fn target) {
  const auto after_call = reinterpret_cast<void*>(address_of(target) + (target == hook_target_call_first ? 5 : 6));
  const auto good = [after_call](long r) { return (r == 42 || r == 1042) && t_seen_return == after_call; };
  auto hook = Hook::install(target, plus_1000, &g_original);
  ASSERT_TRUE(hook) << hook.error().describe();
  t_seen_return = nullptr;
  EXPECT_EQ(call(target, 0), 1042);
  EXPECT_EQ(t_seen_return, after_call);
  t_seen_return = nullptr;
  EXPECT_EQ(call(hook->original<Fn>(), 0), 42);
  EXPECT_EQ(t_seen_return, after_call);
  ASSERT_TRUE(hook->remove());
  hook_live(target, plus_1000, good, {}, kCycles, HookEntryKind::kStolenRel32);
  hook_live(target, plus_1000, good, trap_path(), kCycles, HookEntryKind::kStolenRel32);
}

TEST(HookEntry, StolenCallSeesTheOriginalReturnAddress) { expect_original_return_address(hook_target_call_first); }

// `call [rip+x]` as the last stolen instruction: installed disabled, it can be enabled.
TEST(HookEntry, StolenIndirectCallThroughRipIsEnabledAndSeesTheOriginalReturnAddress) {
  HookOptions disabled;
  disabled.enabled = false;
  auto hook = Hook::install(hook_target_call_slot, plus_1000, &g_original, disabled);
  ASSERT_TRUE(hook) << hook.error().describe();
  auto enabled = hook->enable();
  ASSERT_TRUE(enabled) << enabled.error().describe();
  EXPECT_EQ(call(hook_target_call_slot, 0), 1042);
  ASSERT_TRUE(hook->remove());
  expect_original_return_address(hook_target_call_slot);
}

// A hook that enable() could never complete is refused at install, even
// disabled, with memory and the caller's variable as they were.
TEST(HookEntry, HookThatCouldNeverBeEnabledIsRefusedAtInstall) {
  for (bool enabled : {true, false}) {
    SCOPED_TRACE(enabled ? "enabled" : "disabled");
    test::MemorySnapshot before(address_of(hook_target_call_stack), 32);
    HookOptions options;
    options.enabled = enabled;
    Fn original = hook_target_twice;  // A value the refusal must leave alone.
    auto refused = Hook::install(hook_target_call_stack, plus_1000, &original, options);
    ASSERT_FALSE(refused) << "installed a hook whose entry no copy can run";
    EXPECT_EQ(refused.error().code, ErrorCode::kCannotRelocate) << refused.error().describe();
    EXPECT_NE(refused.error().message.find("rsp"), std::string::npos) << refused.error().describe();
    EXPECT_EQ(original, hook_target_twice);
    EXPECT_EQ(before.differences(), "");
  }
}

// `jmp rel8` at the entry: the bytes after it are still the function's (the
// branch scan covers them), so they may be stolen.
TEST(HookEntry, ShortJumpAtTheEntryIsHooked) {
  const auto good = [](long r) { return r >= 5 && (r <= 0xff + 5 || (r >= 1005 && r <= 0xff + 1005)); };
  hook_live(hook_target_jmp8, plus_1000, good, {}, kCycles, HookEntryKind::kStolenRel32);
  hook_live(hook_target_jmp8, plus_1000, good, trap_path(), kCycles, HookEntryKind::kStolenRel32);
}

// Install publishes the original into the caller's variable before any call
// is redirected: a thread calling the target from before the install reaches
// a detour that calls through the variable at once, and never finds it null.
std::atomic<long> g_null_originals{0};
long (*g_twice_original)(long) = nullptr;
long twice_detour(long x) {
  auto original = __atomic_load_n(&g_twice_original, __ATOMIC_ACQUIRE);
  if (original == nullptr) {
    g_null_originals.fetch_add(1);
    return 2 * x + 1 + 1000;
  }
  return original(x) + 1000;
}

TEST(HookEntry, InstallPublishesTheOriginalBeforeAnyCallIsRedirected) {
  test::MemorySnapshot before(address_of(hook_target_twice), 32);
  // Each caller counts its finished calls, so the test knows when none is still inside the detour.
  constexpr int kThreads = 2;
  std::atomic<std::uint64_t> done[kThreads] = {};
  std::atomic<int> next_index{0};
  test::Callers callers(kThreads, [&](std::uint64_t k) {
    const long x = static_cast<long>(k & 0xff);
    const long r = call(hook_target_twice, x);
    thread_local int me = -1;  // This caller's slot in `done`.
    if (me < 0) me = next_index.fetch_add(1);
    done[me].fetch_add(1);
    return r == 2 * x + 1 || r == 2 * x + 1001;
  });
  for (int i = 0; i < 300; ++i) {
    for (HookOptions options : {HookOptions{}, trap_path()}) {
      __atomic_store_n(&g_twice_original, nullptr, __ATOMIC_RELEASE);
      auto hook = Hook::install(hook_target_twice, twice_detour, &g_twice_original, options);
      ASSERT_TRUE(hook) << hook.error().describe();
      ASSERT_EQ(g_twice_original, hook->original<Fn>());
      ASSERT_TRUE(hook->remove());
      // A call that began before the removal may still be in the detour: wait until each caller finished two more.
      std::uint64_t seen[kThreads];
      for (int t = 0; t < kThreads; ++t) seen[t] = done[t].load();
      for (int t = 0; t < kThreads; ++t)
        while (done[t].load() < seen[t] + 2) std::this_thread::yield();
    }
  }
  callers.join();
  EXPECT_EQ(g_null_originals.load(), 0);
  EXPECT_EQ(callers.wrong.load(), 0u);
  EXPECT_EQ(before.differences(), "");
}

}  // namespace
}  // namespace punch::patcher
