// A site whose old code is one jmp, call or nop is run by the trap handler
// itself (as the kernel's int3_emulate_* do): a thread that meets the trap
// byte continues exactly as the old instruction would have taken it, with no
// out-of-line copy. Callers flip through such sites many times; every result
// must be the old or the new one, the handler must have emulated, and no
// thread may have been sent to a copy.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "live_test_support.hpp"

namespace punch::patcher {
namespace {

namespace x86 = asmjit::x86;

enum class Kind { kJump, kCall, kNop };

struct Case {
  Kind kind;
  const char* name;
};

// The function the callers run, with its 5-byte site first, and the site's two forms.
struct Target {
  std::uintptr_t function = 0;
  std::vector<std::uint8_t> old_bytes, new_bytes;
  int old_result = 0, new_result = 0;
};

// One function: its 5-byte site, then A (returns 1) and B (returns 2).
// jmp: `jmp A` / `jmp B`; call: `call A; add eax, 10; ret` / `call B; ...`;
// nop: `nop5; mov eax, 1; ret` / `jmp B; ...`.
Target make_target(Kind kind) {
  std::size_t b_offset = 0;
  Target t;
  t.function = test::emit([&](x86::Assembler& as) {
    asmjit::Label a = as.newLabel(), b = as.newLabel();
    switch (kind) {
      case Kind::kJump:
        as.long_().jmp(a);
        break;
      case Kind::kCall:
        as.call(a);
        as.add(x86::eax, 10);
        as.ret();
        break;
      case Kind::kNop: {
        static const std::uint8_t nop5[] = {0x0F, 0x1F, 0x44, 0x00, 0x00};
        as.embed(nop5, sizeof nop5);
        as.mov(x86::eax, 1);
        as.ret();
        break;
      }
    }
    as.bind(a);
    as.mov(x86::eax, 1);
    as.ret();
    as.bind(b);
    b_offset = as.offset();
    as.mov(x86::eax, 2);
    as.ret();
  });
  t.old_bytes = test::bytes_at(t.function, 5);
  t.new_bytes = test::jmp_rel32(t.function, t.function + b_offset);
  t.old_result = 1;
  t.new_result = 2;
  if (kind == Kind::kCall) {
    t.new_bytes[0] = 0xE8;  // call rel32: the same displacement as the jmp.
    t.old_result = 11;
    t.new_result = 12;
  }
  return t;
}

class LiveEmulation : public ::testing::TestWithParam<Case> {};

TEST_P(LiveEmulation, ThreadsMeetingTheSiteRunTheOldInstructionWithoutACopy) {
  const Target t = make_target(GetParam().kind);
  ASSERT_NE(t.function, 0u);
  ASSERT_EQ(t.old_bytes.size(), 5u);
  ASSERT_EQ(t.old_bytes[0], GetParam().kind == Kind::kJump ? 0xE9 : GetParam().kind == Kind::kCall ? 0xE8 : 0x0F)
      << "asmjit did not emit the 5-byte form";

  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> calls{0}, wrong{0};
  std::vector<std::thread> callers;
  for (int i = 0; i < 2; ++i)
    callers.emplace_back([&] {
      const auto f = test::as<int (*)()>(t.function);
      while (!stop.load(std::memory_order_relaxed)) {
        const int r = f();
        if (r != t.old_result && r != t.new_result) wrong.fetch_add(1);
        calls.fetch_add(1, std::memory_order_relaxed);
      }
    });
  while (calls.load() == 0) std::this_thread::yield();

  TransactionOptions options;
  options.trapped_threads_wait = false;  // Callers that sleep until the change lands never need emulation.
  Transaction tx(options);
  ASSERT_TRUE(tx.add(test::site(t.function, t.old_bytes, t.new_bytes)));
  const LiveStats before = live_stats();
  const int flips = test::flip_until(tx, 2000, [&] { return live_stats().traps_emulated >= before.traps_emulated + 4; });
  stop = true;
  for (auto& c : callers) c.join();
  const LiveStats after = live_stats();

  EXPECT_EQ(wrong.load(), 0u) << "a caller got a result that is neither the old nor the new code's";
  EXPECT_GT(after.traps_emulated, before.traps_emulated) << "no caller met a trap byte in " << flips << " flips";
  EXPECT_EQ(after.traps_redirected, before.traps_redirected) << "a thread was sent to a copy";
  EXPECT_EQ(test::bytes_at(t.function, 5), t.old_bytes);
  EXPECT_EQ(test::as<int (*)()>(t.function)(), t.old_result);
}

INSTANTIATE_TEST_SUITE_P(OldCode, LiveEmulation,
                         ::testing::Values(Case{Kind::kJump, "jmp"}, Case{Kind::kCall, "call"}, Case{Kind::kNop, "nop"}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace punch::patcher
