// -mfentry entries (issue 5): a function compiled with -pg -mfentry starts with
// the profiling call, and with -mnop-mcount with a 5-byte nop in its place.
// Either is a patchable entry: the hook replaces it, steals nothing, and
// removal restores the exact bytes.
#include <gtest/gtest.h>

#include <atomic>

#include <punch/patcher/hook.hpp>
#include <punch/runtime/safe_read.hpp>

#include "hook_targets.hpp"
#include "memory_snapshot.hpp"

extern "C" {
long hook_fentry_call_target(long);  // 5x + 1, -pg -mfentry
long hook_fentry_nop_target(long);   // 7x + 2, -pg -mfentry -mnop-mcount (g++)
}

namespace punch::patcher {
namespace {

std::atomic<Fn> g_original{nullptr};
long plus_1000(long x) { return g_original.load()(x) + 1000; }

// The bytes at the function's entry after a leading endbr64.
std::vector<std::uint8_t> entry_bytes(Fn f, std::size_t n) {
  const auto a = reinterpret_cast<std::uintptr_t>(f);
  auto head = runtime::safe_read_exact(a, 4 + n);
  EXPECT_TRUE(head);
  if (!head) return {};
  const bool endbr = (*head)[0] == 0xF3 && (*head)[1] == 0x0F && (*head)[2] == 0x1E && (*head)[3] == 0xFA;
  return {head->begin() + (endbr ? 4 : 0), head->begin() + (endbr ? 4 : 0) + static_cast<std::ptrdiff_t>(n)};
}

// Hooks `f`, checks the patchable-entry form with `pad` bytes replaced, calls, removes.
void hook_and_remove(Fn f, long (*expected)(long), std::size_t pad) {
  const test::MemorySnapshot before(reinterpret_cast<void*>(f), 32);
  HookOptions options;
  options.enabled = false;
  auto hook = Hook::install(reinterpret_cast<void*>(f), reinterpret_cast<void*>(plus_1000), options);
  ASSERT_TRUE(hook) << hook.error().describe();
  g_original = hook->original<Fn>();
  ASSERT_TRUE(hook->enable());
  EXPECT_EQ(hook->info().kind, HookEntryKind::kPatchableEntry);
  EXPECT_EQ(hook->info().stolen, pad);
  for (long x = -20; x <= 20; ++x) {
    ASSERT_EQ(call(f, x), expected(x) + 1000);
    ASSERT_EQ(call(hook->original<Fn>(), x), expected(x));
  }
  auto removed = hook->remove();
  ASSERT_TRUE(removed) << removed.error().describe();
  EXPECT_EQ(before.differences(), "");
  EXPECT_EQ(call(f, 3), expected(3));
}

TEST(HookFentry, ProfilingCallEntryIsReplacedAsAPatchableEntry) {
  ASSERT_EQ(call(hook_fentry_call_target, 1), 6);  // Binds a lazy PLT slot of __fentry__.
  const auto head = entry_bytes(hook_fentry_call_target, 2);
  ASSERT_EQ(head.size(), 2u);
  if (head[0] == 0xEB)  // jmp short over a data word, before anything else the function does.
    GTEST_SKIP() << "clang's -fsanitize=function puts a signature (jmp short; .quad) before the profiling call: "
                    "the entry is not the pad; the g++ build runs this test";
  // Control: the entry is the profiling call, direct (e8) or through the GOT (ff 15).
  const bool direct = head[0] == 0xE8, through_got = head[0] == 0xFF && head[1] == 0x15;
  ASSERT_TRUE(direct || through_got) << "not compiled with -pg -mfentry? first byte " << int(head[0]);
  hook_and_remove(
      hook_fentry_call_target, [](long x) { return 5 * x + 1; }, direct ? 5 : 6);
}

TEST(HookFentry, NopMcountEntryIsReplacedAsAPatchableEntry) {
#ifndef PUNCH_HAVE_NOP_MCOUNT
  GTEST_SKIP() << "clang has no -mnop-mcount on x86; Hook.PatchableEntriesArePreferredAndNeedNoStolenInstructions "
                  "hooks the same 5-byte nop written in assembly";
#endif
  const std::vector<std::uint8_t> nop5{0x0F, 0x1F, 0x44, 0x00, 0x00};
  ASSERT_EQ(entry_bytes(hook_fentry_nop_target, 5), nop5) << "not compiled with -mnop-mcount?";
  hook_and_remove(
      hook_fentry_nop_target, [](long x) { return 7 * x + 2; }, 5);
}

}  // namespace
}  // namespace punch::patcher
