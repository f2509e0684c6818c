// The corpus of tricky entries (tests/support/disasm_corpus.S): extents,
// boundaries, branch scans, and relocation checked by running the original and
// the relocated bytes side by side in Unicorn.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include <punch/disasm/branch_scan.hpp>
#include <punch/disasm/relocate.hpp>
#include <punch/disasm/validate.hpp>
#include <punch/runtime/function_bounds.hpp>

#include "differential.hpp"
#include "disasm_corpus.hpp"
#include "mnemonic.hpp"

namespace punch::disasm {
namespace {

using test::CorpusCase;

std::uintptr_t entry_of(const CorpusCase& c) { return reinterpret_cast<std::uintptr_t>(c.function); }

// The function's bytes, copied from our own readable text.
std::vector<std::uint8_t> function_bytes(const CorpusCase& c) {
  auto extent = runtime::function_containing(entry_of(c));
  EXPECT_TRUE(extent) << c.name << ": " << extent.error().describe();
  if (!extent) return {};
  std::vector<std::uint8_t> bytes(extent->end - extent->start);
  std::memcpy(bytes.data(), reinterpret_cast<const void*>(extent->start), bytes.size());
  return bytes;
}

class Corpus : public ::testing::TestWithParam<CorpusCase> {};

// function_containing finds the exported symbol, the run lies on instruction boundaries
// and the branch scan sees exactly the hazards the case was written to have.
TEST_P(Corpus, ExtentBoundariesAndBranchScan) {
  const CorpusCase& c = GetParam();
  const std::uintptr_t entry = entry_of(c);
  auto extent = runtime::function_containing(entry + c.run - 1);
  ASSERT_TRUE(extent) << extent.error().describe();
  EXPECT_EQ(extent->start, entry);
  EXPECT_EQ(extent->source, runtime::FunctionBounds::Source::kDynamicSymbol);
  EXPECT_GE(extent->end - extent->start, c.run);

  const auto bytes = function_bytes(c);
  const CodeSpan code{entry, bytes};
  auto inside = check_boundaries(code, entry, entry + c.run);
  ASSERT_TRUE(inside) << inside.error().describe();
  EXPECT_EQ(inside->back().end(), entry + c.run);

  auto scan = scan_branches(code, entry, entry + c.run);
  ASSERT_TRUE(scan) << scan.error().describe();
  EXPECT_EQ(!scan->branches_into.empty(), c.branch_into_run);
  EXPECT_EQ(!scan->indirect_jumps.empty(), c.indirect_jump);
  EXPECT_TRUE(scan->complete);
}

// Each RIP-relative operand of the relocated run names the same absolute address.
void expect_same_memory_targets(CodeSpan source, const Relocation& relocation) {
  auto old_insns = decode_all(source);
  ASSERT_TRUE(old_insns) << old_insns.error().describe();
  const CodeSpan moved{relocation.address, relocation.bytes};
  ASSERT_EQ(relocation.offsets.size(), old_insns->size());
  for (std::size_t i = 0; i < old_insns->size(); ++i) {
    const Instruction& before = (*old_insns)[i];
    EXPECT_EQ(relocation.offsets[i].old_offset, before.address - source.address);
    if (!before.has_memory_target) continue;
    auto after = decode(moved, relocation.address + relocation.offsets[i].new_offset);
    ASSERT_TRUE(after) << after.error().describe();
    EXPECT_EQ(punch::test::mnemonic_at(moved, after->address), punch::test::mnemonic_at(source, before.address));
    EXPECT_TRUE(after->has_memory_target);
    EXPECT_EQ(after->memory_target, before.memory_target) << format(moved, after->address);
  }
}

// Runs original and relocated from several register states; returns how many runs were conclusive.
int run_differential(const CorpusCase& c, const std::vector<std::uint8_t>& bytes, const Relocation& relocation) {
  const std::uintptr_t entry = entry_of(c);
  test::Layout layout;
  layout.a = entry;
  layout.original = bytes;
  layout.b = relocation.address;
  layout.relocated = relocation.bytes;
  std::mt19937_64 rng(0x5eed ^ entry);
  int conclusive = 0;
  for (long x = 0; x < 12; ++x) {
    test::CpuState state = test::random_state(rng, 0x100000, 0x1000);
    state.gpr[7] = static_cast<std::uint64_t>(x == 11 ? -3 : x);  // rdi: both sides of every jcc.
    const auto original = test::emulate(layout, entry, entry, entry + c.run, state, 5000);
    if (!original.completed) continue;  // The emulator cannot run it (AVX-512, ...): nothing to compare.
    ++conclusive;
    const auto moved = test::emulate(layout, relocation.address, relocation.address,
                                     relocation.address + relocation.bytes.size(), state, 20000);
    const std::string diff =
        test::compare(original, moved, entry + c.run, relocation.address + relocation.bytes.size());
    EXPECT_EQ(diff, "") << c.name << " with rdi=" << x;
  }
  return conclusive;
}

// Relocation 1 MiB away (rel32 reach) behaves the same, or is refused as the case says.
TEST_P(Corpus, RelocatedNearbyBehavesTheSame) {
  const CorpusCase& c = GetParam();
  const auto bytes = function_bytes(c);
  const std::vector<std::uint8_t> before = bytes;
  const CodeSpan run{entry_of(c), std::span(bytes).first(c.run)};
  auto relocation = relocate(run, entry_of(c) + 0x100000);
  EXPECT_EQ(bytes, before);  // relocate only reads its input.
  if (!c.relocatable) {
    ASSERT_FALSE(relocation);
    EXPECT_TRUE(relocation.error().code == ErrorCode::kCannotRelocate) << relocation.error().describe();
    // The message starts with the address of the offending instruction, inside the run.
    const std::uintptr_t named = std::stoull(relocation.error().message, nullptr, 16);
    EXPECT_TRUE(run.contains(named)) << relocation.error().describe();
    return;
  }
  ASSERT_TRUE(relocation) << relocation.error().describe();
  EXPECT_LE(relocation->bytes.size(), *relocated_size_bound(run));
  expect_same_memory_targets(run, *relocation);
  if (const std::string refused = test::unicorn_refused_here(); !refused.empty()) GTEST_SKIP() << refused;
  const int conclusive = run_differential(c, bytes, *relocation);
  if (c.callable) {
    EXPECT_GT(conclusive, 0) << c.name << ": the emulator ran none of the states";
  }
}

// 3 GiB away: branches take their absolute forms; RIP-relative data is out of range.
TEST_P(Corpus, RelocatedFarAwayUsesAbsoluteFormsOrRefuses) {
  const CorpusCase& c = GetParam();
  const auto bytes = function_bytes(c);
  const CodeSpan run{entry_of(c), std::span(bytes).first(c.run)};
  const std::uintptr_t far = entry_of(c) + (3ull << 30);
  if (!c.relocatable) {  // Refused for what it is, at any distance.
    auto refused = relocate(run, far);
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().code, ErrorCode::kCannotRelocate) << refused.error().describe();
    return;
  }
  auto insns = decode_all(run);
  ASSERT_TRUE(insns);
  bool has_rip_data = false;
  for (const auto& insn : *insns) has_rip_data |= insn.has_memory_target;
  auto relocation = relocate(run, far);
  if (has_rip_data) {
    ASSERT_FALSE(relocation);
    EXPECT_EQ(relocation.error().code, ErrorCode::kOutOfRange) << relocation.error().describe();
    return;
  }
  ASSERT_TRUE(relocation) << relocation.error().describe();
  EXPECT_LE(relocation->bytes.size(), *relocated_size_bound(run));
  if (const std::string refused = test::unicorn_refused_here(); !refused.empty()) GTEST_SKIP() << refused;
  const int conclusive = run_differential(c, bytes, *relocation);
  if (c.callable) {
    EXPECT_GT(conclusive, 0) << c.name << ": the emulator ran none of the states";
  }
}

INSTANTIATE_TEST_SUITE_P(Disasm, Corpus,
                         ::testing::ValuesIn(test::disasm_corpus().begin(), test::disasm_corpus().end()),
                         [](const auto& case_info) { return std::string(case_info.param.name); });

}  // namespace
}  // namespace punch::disasm
