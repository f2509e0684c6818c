// A site whose old code is one jmp, call, nop or constant load (mov reg, imm)
// is run by the trap handler itself (as the kernel's int3_emulate_* do for
// the first three): a thread that meets the trap
// byte continues exactly as the old instruction would have taken it, with no
// out-of-line copy. Callers flip through such sites many times; every result
// must be the old or the new one, the handler must have emulated, and no
// thread may have been sent to a copy.
#include <gtest/gtest.h>

#include <vector>

#include "live_test_support.hpp"

namespace punch::patcher {
namespace {

namespace x86 = asmjit::x86;

enum class Kind { kJump, kCall, kNop, kLoad64, kLoadSigned };

struct Case {
  Kind kind;
  const char* name;
};
// gtest would otherwise print the struct's bytes, padding included (valgrind: uninitialised).
void PrintTo(const Case& c, std::ostream* out) { *out << c.name; }

// The function the callers run, with its site first, and the site's two forms.
struct Target {
  std::uintptr_t function = 0;
  std::uintptr_t site = 0;  // The function's first byte but for the loads.
  std::vector<std::uint8_t> old_bytes, new_bytes;
  int old_result = 0, new_result = 0;
};

// `mov r9, imm64` (49 B9: REX.B, a register only a REX prefix reaches) or
// `mov rcx, imm32` sign-extended (48 C7 C1), after a `xor` that clears the
// register (a wrongly emulated load must not pass on a value left from an
// earlier call); the function returns the register's low half xor its high
// half, so a wrong extension shows too.
Target make_load_target(Kind kind) {
  const bool wide = kind == Kind::kLoad64;
  const std::int64_t old_value = wide ? (std::int64_t{1} << 40) + 5 : -2;
  const std::int64_t new_value = wide ? (std::int64_t{1} << 40) + 6 : 7;
  const auto load = [wide](std::int64_t value) {
    std::vector<std::uint8_t> b =
        wide ? std::vector<std::uint8_t>{0x49, 0xB9} : std::vector<std::uint8_t>{0x48, 0xC7, 0xC1};
    for (std::size_t k = 0; k < (wide ? 8u : 4u); ++k) b.push_back(static_cast<std::uint8_t>(value >> (8 * k)));
    return b;
  };
  const auto folded = [](std::int64_t v) {
    const auto u = static_cast<std::uint64_t>(v);
    return static_cast<int>(static_cast<std::uint32_t>(u) ^ static_cast<std::uint32_t>(u >> 32));
  };
  Target t;
  t.old_bytes = load(old_value);
  t.new_bytes = load(new_value);
  t.old_result = folded(old_value);  // 261 or 1
  t.new_result = folded(new_value);  // 262 or 7
  std::size_t site_offset = 0;
  const std::uintptr_t function = test::emit([&](x86::Assembler& as) {
    const x86::Gp reg = wide ? x86::r9 : x86::rcx;
    as.xor_(reg.r32(), reg.r32());
    site_offset = as.offset();
    as.embed(t.old_bytes.data(), t.old_bytes.size());
    as.mov(x86::rax, reg);
    as.shr(x86::rax, 32);
    as.xor_(x86::eax, reg.r32());
    as.ret();
  });
  t.function = function;
  t.site = function + site_offset;
  return t;
}

// One function: its 5-byte site, then A (returns 1) and B (returns 2).
// jmp: `jmp A` / `jmp B`; call: `call A; add eax, 10; ret` / `call B; ...`;
// nop: `nop5; mov eax, 1; ret` / `jmp B; ...`.
Target make_target(Kind kind) {
  if (kind == Kind::kLoad64 || kind == Kind::kLoadSigned) return make_load_target(kind);
  std::size_t b_offset = 0;
  Target t;
  t.function = test::emit([&](x86::Assembler& as) {
    asmjit::Label a = as.newLabel(), b = as.newLabel();
    switch (kind) {
      case Kind::kJump: as.long_().jmp(a); break;
      case Kind::kCall:
        as.call(a);
        as.add(x86::eax, 10);
        as.ret();
        break;
      default: {  // kNop
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
  t.site = t.function;
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
  ASSERT_EQ(test::bytes_at(t.site, t.old_bytes.size()), t.old_bytes) << "asmjit did not emit the expected form";

  test::Callers callers(2, [&t](std::uint64_t) {
    const int r = test::as<int (*)()>(t.function)();
    return r == t.old_result || r == t.new_result;
  });

  TransactionOptions options;
  options.trapped_threads_wait = false;  // Callers that sleep until the change lands never need emulation.
  options.hold_threads = false;          // The trap path: callers run on and meet the sites in flight.
  Transaction tx(options);
  ASSERT_TRUE(tx.add(test::site(t.site, t.old_bytes, t.new_bytes)));
  const LiveStats before = live_stats();
  test::SlowSyncs slow;
  const int flips = test::flip_until(tx, 200, [&] { return live_stats().traps_emulated >= before.traps_emulated + 4; });
  callers.join();
  const LiveStats after = live_stats();

  EXPECT_EQ(callers.wrong.load(), 0u) << "a caller got a result that is neither the old nor the new code's";
  EXPECT_GT(after.traps_emulated, before.traps_emulated)
      << "no caller met a trap byte in " << flips << " flips (" << callers.calls.load() << " calls; "
      << after.late_traps - before.late_traps << " late traps, " << after.traps_waited - before.traps_waited
      << " waited, " << after.traps_chained - before.traps_chained << " chained)";
  EXPECT_EQ(after.traps_redirected, before.traps_redirected) << "a thread was sent to a copy";
  EXPECT_EQ(test::bytes_at(t.site, t.old_bytes.size()), t.old_bytes);
  EXPECT_EQ(test::as<int (*)()>(t.function)(), t.old_result);
}

INSTANTIATE_TEST_SUITE_P(OldCode, LiveEmulation,
                         ::testing::Values(Case{Kind::kJump, "jmp"}, Case{Kind::kCall, "call"}, Case{Kind::kNop, "nop"},
                                           Case{Kind::kLoad64, "mov_r9_imm64"},
                                           Case{Kind::kLoadSigned, "mov_rcx_simm32"}),
                         [](const auto& case_info) { return std::string(case_info.param.name); });

}  // namespace
}  // namespace punch::patcher
