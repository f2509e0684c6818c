// Seeded random instruction sequences relocated near and far, run side by side in Unicorn.
#include <gtest/gtest.h>

#include <random>

#include <punch/disasm/relocate.hpp>

#include "differential.hpp"
#include "random_sequence.hpp"

namespace punch::disasm {
namespace {

constexpr std::uint64_t kA = 0x555555554000;
constexpr std::uint64_t kData = kA - 0x3000;

struct Tally {
  int relocated = 0, refused = 0, conclusive = 0;
};

void check_sequence(std::mt19937_64& rng, std::uint64_t destination, Tally& tally) {
  const auto run = test::generate_run(rng, kA, kData);
  const CodeSpan source{kA, run.bytes};
  auto relocation = relocate(source, destination);
  const bool far = destination - kA > (1ull << 31);
  if (!relocation) {
    // The only refusals the generator can provoke: RIP-relative data out of reach.
    ASSERT_EQ(relocation.error().code, ErrorCode::kOutOfRange) << relocation.error().describe();
    ASSERT_TRUE(far && run.has_rip_data) << relocation.error().describe();
    ++tally.refused;
    return;
  }
  ASSERT_FALSE(far && run.has_rip_data) << "relocated RIP-relative data 3 GiB away";
  ASSERT_LE(relocation->bytes.size(), *relocated_size_bound(source));
  ++tally.relocated;
  if (!test::unicorn_refused_here().empty()) return;  // Relocation checked above; nothing runs the code.

  test::Layout layout;
  layout.a = kA;
  layout.original = run.bytes;
  layout.b = destination;
  layout.relocated = relocation->bytes;
  layout.data = kData;
  layout.data_bytes.resize(0x1000);
  for (auto& byte : layout.data_bytes) byte = static_cast<std::uint8_t>(rng());
  for (int i = 0; i < 4; ++i) {
    const auto state = test::random_state(rng, kData, 0x1000);
    const auto original = test::emulate(layout, kA, kA, kA + run.bytes.size(), state, 2000);
    if (!original.completed) continue;  // A fault or an endless loop in the original: nothing to compare.
    ++tally.conclusive;
    const auto moved =
        test::emulate(layout, destination, destination, destination + relocation->bytes.size(), state, 20000);
    const std::string diff =
        test::compare(original, moved, kA + run.bytes.size(), destination + relocation->bytes.size());
    ASSERT_EQ(diff, "") << "sequence " << test::hex_dump(run.bytes) << " relocated to " << at(destination) << ": "
                        << test::hex_dump(relocation->bytes);
  }
}

// Each seed is a fixed set of sequences: a failure names its bytes and is reproducible.
TEST(RandomSequences, BehaveTheSameNearby) {
  std::mt19937_64 rng(20240601);
  Tally tally;
  for (int i = 0; i < 400 && !HasFatalFailure(); ++i) check_sequence(rng, kA + 0x10000 + 16 * (i % 7), tally);
  if (const std::string refused = test::unicorn_refused_here(); !refused.empty()) GTEST_SKIP() << refused;
  EXPECT_GT(tally.conclusive, 400);  // Most runs must actually be compared.
}

TEST(RandomSequences, BehaveTheSameFarAwayOrRefuseRipData) {
  std::mt19937_64 rng(77);
  Tally tally;
  for (int i = 0; i < 400 && !HasFatalFailure(); ++i) check_sequence(rng, kA + (3ull << 30), tally);
  EXPECT_GT(tally.refused, 20);
  if (const std::string refused = test::unicorn_refused_here(); !refused.empty()) GTEST_SKIP() << refused;
  EXPECT_GT(tally.conclusive, 200);
}

}  // namespace
}  // namespace punch::disasm
