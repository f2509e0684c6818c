// When even the rollback fails (issue 6): every write from the N-th on fails
// with EIO, so a commit or revert that fails part way cannot restore memory
// either. The error must then be kInconsistent and say which site holds which
// bytes — and what it says must be what memory holds. A site left holding a
// trap byte stays safe to run. Runs in a child process: the test repairs the
// sites by hand afterwards, and the generations left in flight stay there.
#include <gtest/gtest.h>

#include <cstdio>
#include <sstream>
#include <string>
#include <thread>

#include <punch/runtime/code_writer.hpp>
#include <punch/runtime/fault_injection.hpp>
#include <punch/runtime/safe_read.hpp>
#include <punch/runtime/sync.hpp>

#include "child_process.hpp"
#include "live_test_support.hpp"

namespace punch::patcher {
namespace {

using namespace asmjit;
using runtime::testing::FaultKind;
using runtime::testing::FaultPoint;

std::string hex(const std::vector<std::uint8_t>& bytes) {
  std::string out;
  char b[4];
  for (std::uint8_t x : bytes) out += (std::snprintf(b, sizeof b, " %02x", x), b);
  return out;
}

// What the message says site `i` holds: "its old bytes", "its new bytes", "a mix: cc 02 ..." or "" if unnamed.
std::string claim(const std::string& message, std::size_t i, std::uintptr_t address) {
  const std::string head = "site #" + std::to_string(i) + " at " + at(address) + " holds ";
  const auto p = message.find(head);
  if (p == std::string::npos) return "";
  const auto start = p + head.size();
  const auto end = message.find(';', start);
  return message.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

// Whether `said` describes `now` exactly, given the site's old and new bytes.
bool claim_matches(const std::string& said, const std::vector<std::uint8_t>& now, const Site& site, bool reverting) {
  const auto& old_bytes = reverting ? site.replacement : site.expected;
  const auto& new_bytes = reverting ? site.expected : site.replacement;
  if (said == "its old bytes") return now == old_bytes;
  if (said == "its new bytes") return now == new_bytes;
  if (said.rfind("a mix:", 0) == 0)  // "a mix: cc 0a 00 00 00"
    return said.substr(6) == hex(now) && now != old_bytes && now != new_bytes;
  return false;
}

struct Batch {
  std::vector<Site> sites;
  std::vector<std::uintptr_t> functions;

  // Three single-instruction sites in separate functions (three runs, so a
  // failure can fall between them) and one site whose new code is several
  // instructions (a failed last step cannot be undone while threads may be in it).
  Batch() {
    for (int i = 0; i < 3; ++i) {
      const std::uintptr_t f = test::emit_return(10 + i);
      functions.push_back(f);
      sites.push_back(test::site(f, test::mov_eax(10 + i), test::mov_eax(20 + i)));
    }
    const std::uintptr_t f = test::emit_return(13);
    functions.push_back(f);
    // xor eax, eax; add eax, 23 (3 bytes: 83 c0 17) = 5 bytes, two instructions.
    sites.push_back(test::site(f, test::mov_eax(13), {0x31, 0xC0, 0x83, 0xC0, 0x17}));
  }
};

// Checks one failed operation; counts true inconsistencies. Returns 0 when every claim holds.
int check_failure(const Error& error, const Batch& batch, bool reverting, int& inconsistent) {
  if (error.code != ErrorCode::kInconsistent) {
    // A clean failure: every site holds what it held before.
    for (const Site& s : batch.sites) {
      auto now = runtime::safe_read_exact(s.address, s.expected.size());
      CHILD_CHECK(now && *now == (reverting ? s.replacement : s.expected), "%s", error.describe().c_str());
    }
    return 0;
  }
  bool any_changed = false;
  for (std::size_t i = 0; i < batch.sites.size(); ++i) {
    const Site& s = batch.sites[i];
    auto now = runtime::safe_read_exact(s.address, s.expected.size());
    CHILD_CHECK(now.has_value(), "unreadable site");
    const std::string said = claim(error.message, i, s.address);
    CHILD_CHECK(claim_matches(said, *now, s, reverting), "site #%zu: says \"%s\", holds%s; %s", i, said.c_str(),
                hex(*now).c_str(), error.describe().c_str());
    any_changed = any_changed || *now != (reverting ? s.replacement : s.expected);
    // Whatever it holds, running it gives the old or the new result (a trap
    // byte is still claimed), on any thread, and no thread sleeps waiting for
    // a run that is over.
    const std::uint64_t expired = live_stats().trap_waits_expired;
    int r = 0;
    std::thread([&] { r = test::as<int (*)()>(batch.functions[i])(); }).join();
    CHILD_CHECK(r == 10 + static_cast<int>(i) || r == 20 + static_cast<int>(i), "site #%zu returned %d", i, r);
    CHILD_CHECK(live_stats().trap_waits_expired == expired, "site #%zu: a caller slept for a stranded run", i);
  }
  // Reporting kInconsistent while every site holds what it held before would
  // send a user to repair a process that is fine: that is a clean failure.
  CHILD_CHECK(any_changed, "kInconsistent although every site holds what it held before: %s", error.describe().c_str());
  ++inconsistent;
  return 0;
}

// Puts every site back to `replaced ? new : old` by hand (test-only repair of a kInconsistent state).
int repair(const Batch& batch, bool replaced) {
  auto writer = runtime::CodeWriter::global();
  CHILD_CHECK(writer.has_value(), "writer");
  for (const Site& s : batch.sites)
    CHILD_CHECK((*writer)->write(s.address, replaced ? s.replacement : s.expected).has_value(), "repair write");
  CHILD_CHECK(runtime::sync_all_threads().has_value(), "repair sync");
  return 0;
}

int every_write_from_nth_fails(bool reverting) {
  Batch batch;
  Transaction tx;
  for (const Site& s : batch.sites) CHILD_CHECK(tx.add(s).has_value(), "add");
  int inconsistent = 0, clean = 0;
  for (std::uint64_t n = 1; n <= 40; ++n) {
    if (reverting) CHILD_CHECK(tx.commit().has_value(), "commit before revert");
    runtime::testing::inject_faults(FaultPoint::kWrite, n, runtime::testing::kEveryOperation, FaultKind::kEio);
    Status done = reverting ? tx.revert() : tx.commit();
    const bool fired = runtime::testing::faults_fired(FaultPoint::kWrite) > 0;
    runtime::testing::clear_faults();
    if (done) {
      if (!reverting) CHILD_CHECK(tx.revert().has_value(), "revert after commit");
      if (!fired) break;  // n is past the operation's last write.
      continue;
    }
    std::printf("n=%llu: %s\n", static_cast<unsigned long long>(n), done.error().describe().c_str());
    const int before = inconsistent;
    if (check_failure(done.error(), batch, reverting, inconsistent) != 0) return 1;
    if (inconsistent == before) ++clean;
    if (repair(batch, reverting) != 0) return 1;  // Back to the state before the operation.
    if (reverting) {                              // The transaction still counts itself committed.
      CHILD_CHECK(tx.revert().has_value(), "revert after repair");
    }
  }
  std::printf("inconsistent=%d clean=%d\n", inconsistent, clean);
  CHILD_CHECK(inconsistent > 0, "no failure left memory inconsistent");
  return 0;
}

TEST(InconsistentRollback, CommitNamesWhichSiteHoldsWhichBytes) {
  auto child = test::run_in_child([] { return every_write_from_nth_fails(false); });
  EXPECT_EQ(child.exit_code, 0) << child.describe();
}

TEST(InconsistentRollback, RevertNamesWhichSiteHoldsWhichBytes) {
  auto child = test::run_in_child([] { return every_write_from_nth_fails(true); });
  EXPECT_EQ(child.exit_code, 0) << child.describe();
}

}  // namespace
}  // namespace punch::patcher
