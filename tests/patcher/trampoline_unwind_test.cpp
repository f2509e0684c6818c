// A hook's trampoline has unwind info while it lives: the displaced prologue
// read back (endbr64; push rbp; mov rbp, rsp), then gone once the code is released.
#include <gtest/gtest.h>

#include <punch/patcher/hook.hpp>

#include "hook_targets.hpp"
#include "unwind_table.hpp"

struct TrampolineUnwindBases {
  void* tbase;
  void* dbase;
  void* func;
};
extern "C" const void* _Unwind_Find_FDE(void* pc, TrampolineUnwindBases* bases);

namespace punch::patcher {
namespace {

long times_two(long x) { return 2 * x; }

TEST(TrampolineUnwind, DisplacedPrologueIsDescribedUntilTheTrampolineIsReleased) {
  auto hook = Hook::install(reinterpret_cast<void*>(hook_target_prologue), reinterpret_cast<void*>(times_two));
  ASSERT_TRUE(hook) << hook.error().describe();
  const std::uintptr_t trampoline = hook->info().trampoline;
  TrampolineUnwindBases bases{};
  ASSERT_NE(_Unwind_Find_FDE(reinterpret_cast<void*>(trampoline), &bases), nullptr);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(bases.func), trampoline);

  // At entry the CFA is rsp + 8; after the copied push rbp; mov rbp, rsp it follows rbp.
  runtime::detail::FrameRow row;
  std::uintptr_t start = 0;
  ASSERT_TRUE(runtime::detail::unwind_table_find(trampoline, row, start));
  EXPECT_FALSE(row.cfa_on_rbp);
  EXPECT_EQ(row.cfa_offset, 8);
  bool follows_rbp = false;
  for (std::uintptr_t pc = trampoline; pc < trampoline + 16; ++pc)
    if (runtime::detail::unwind_table_find(pc, row, start) && row.cfa_on_rbp) follows_rbp = row.cfa_offset == 16;
  EXPECT_TRUE(follows_rbp);

  ASSERT_TRUE(hook->remove());
  auto released = release_retired_hook_code();
  ASSERT_TRUE(released) << released.error().describe();
  EXPECT_EQ(_Unwind_Find_FDE(reinterpret_cast<void*>(trampoline), &bases), nullptr);
  EXPECT_FALSE(runtime::detail::unwind_table_find(trampoline, row, start));
}

}  // namespace
}  // namespace punch::patcher
