// punch's own code is named in the code registry while it lives: a hook's
// trampoline "punch:trampoline:<function>", a mid hook's stub
// "punch:mid_hook:<function>[+<offset>]"; releasing the code removes the name.
#include <gtest/gtest.h>

#include <punch/patcher/hook.hpp>
#include <punch/patcher/mid_hook.hpp>
#include <punch/runtime/code_registry.hpp>

#include "hook_targets.hpp"

extern "C" long mid_target_entry(long);  // mid_hook_targets.S: hookable at its first instruction.

namespace punch::patcher {
namespace {

long plus_one_detour(long x) { return x + 1; }
void do_nothing(MidContext&) {}

TEST(CodeNames, HookTrampolineIsNamedAfterItsFunctionUntilReleased) {
  auto hook = Hook::install(reinterpret_cast<void*>(hook_target_square), reinterpret_cast<void*>(plus_one_detour));
  ASSERT_TRUE(hook) << hook.error().describe();
  const std::uintptr_t trampoline = hook->info().trampoline;
  runtime::CodeInfo info;
  ASSERT_TRUE(runtime::find_code(trampoline, info));
  EXPECT_STREQ(info.name, "punch:trampoline:hook_target_square");
  EXPECT_EQ(info.kind, runtime::CodeKind::kTrampoline);

  ASSERT_TRUE(hook->remove());
  auto released = release_retired_hook_code();
  ASSERT_TRUE(released) << released.error().describe();
  EXPECT_FALSE(runtime::find_code(trampoline, info)) << "freed code has no name: " << info.name;
}

TEST(CodeNames, MidHookStubIsNamedAfterTheSiteUntilReleased) {
  auto hook = MidHook::install(reinterpret_cast<void*>(mid_target_entry), do_nothing);
  ASSERT_TRUE(hook) << hook.error().describe();
  const std::uintptr_t stub = hook->info().stub;
  runtime::CodeInfo info;
  ASSERT_TRUE(runtime::find_code(stub, info));
  EXPECT_STREQ(info.name, "punch:mid_hook:mid_target_entry");
  EXPECT_EQ(info.kind, runtime::CodeKind::kMidHookStub);

  ASSERT_TRUE(hook->remove());
  auto released = release_retired_hook_code();
  ASSERT_TRUE(released) << released.error().describe();
  EXPECT_FALSE(runtime::find_code(stub, info)) << "freed code has no name: " << info.name;
}

}  // namespace
}  // namespace punch::patcher
