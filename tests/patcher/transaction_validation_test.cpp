// Every refused transaction names the site and reason and leaves memory exactly as it was.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <punch/runtime/code_writer.hpp>

#include "live_test_support.hpp"
#include "memory_snapshot.hpp"

namespace punch::patcher {
namespace {

using test::emit_return;
using test::mov_eax;
using test::site;

// Commits `tx`, expects `code`, and checks [address, address+size) did not change.
void expect_refused(Transaction& tx, ErrorCode code, std::uintptr_t address, std::size_t size,
                    const std::string& must_mention) {
  const test::MemorySnapshot before(address, size);
  auto validated = tx.validate();
  auto committed = tx.commit();
  ASSERT_FALSE(validated);
  ASSERT_FALSE(committed);
  EXPECT_EQ(committed.error().code, code) << committed.error().describe();
  EXPECT_NE(committed.error().message.find(must_mention), std::string::npos) << committed.error().describe();
  EXPECT_TRUE(before.unchanged()) << before.differences();
  EXPECT_FALSE(tx.committed());
}

TEST(TransactionValidation, OverlappingSitesAreRefusedByAdd) {
  const std::uintptr_t f = emit_return(1);
  const test::MemorySnapshot before(f, 6);
  Transaction tx;
  ASSERT_TRUE(tx.add(site(f, mov_eax(1), mov_eax(2))));
  auto second = tx.add(site(f + 4, {0x00, 0xC3}, {0x00, 0xC3}));
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, ErrorCode::kOverlap);
  EXPECT_NE(second.error().message.find(at(f)), std::string::npos) << second.error().describe();
  EXPECT_TRUE(before.unchanged()) << before.differences();
}

// add() compares a site with the last one while sites come in address
// order, and with its neighbours by address from the first that does not:
// an overlap is found either way. (Nothing is read: add's checks are cheap.)
TEST(TransactionValidation, OverlapIsFoundWhateverOrderSitesComeIn) {
  const std::uintptr_t base = 0x10000;
  const std::vector<std::uint8_t> five(5, 0x90);
  auto add = [&](Transaction& tx, std::uintptr_t offset) { return tx.add(site(base + offset, five, five)); };
  Transaction in_order;
  ASSERT_TRUE(add(in_order, 0));
  ASSERT_TRUE(add(in_order, 5));
  auto last = add(in_order, 9);
  ASSERT_FALSE(last);
  EXPECT_EQ(last.error().code, ErrorCode::kOverlap);
  EXPECT_NE(last.error().message.find("site #1"), std::string::npos) << last.error().describe();

  Transaction any_order;
  ASSERT_TRUE(add(any_order, 20));  // site 0
  ASSERT_TRUE(add(any_order, 10));  // site 1: out of order
  ASSERT_TRUE(add(any_order, 30));  // site 2
  for (const auto& [offset, overlapped] :
       {std::pair{12, "site #1"}, {18, "site #0"}, {8, "site #1"}, {34, "site #2"}}) {
    SCOPED_TRACE(offset);
    auto s = add(any_order, static_cast<std::uintptr_t>(offset));
    ASSERT_FALSE(s);
    EXPECT_EQ(s.error().code, ErrorCode::kOverlap);
    EXPECT_NE(s.error().message.find(overlapped), std::string::npos) << s.error().describe();
  }
  EXPECT_TRUE(add(any_order, 15));  // Fits between sites 1 and 0 exactly.
  EXPECT_TRUE(add(any_order, 25));
  EXPECT_EQ(any_order.sites().size(), 5u);
}

TEST(TransactionValidation, StaleExpectedBytes) {
  const std::uintptr_t f = emit_return(1);
  Transaction tx;
  ASSERT_TRUE(tx.add(site(f, mov_eax(9), mov_eax(2))));
  expect_refused(tx, ErrorCode::kBytesMismatch, f, 6, at(f));
}

// The mismatching byte is printed in hex, like the bytes of a disassembly,
// and the error carries the site's address as a value to branch on.
TEST(TransactionValidation, MismatchNamesTheByteInHexAndCarriesTheAddress) {
  const std::uintptr_t f = emit_return(0x1f);
  Transaction tx;
  ASSERT_TRUE(tx.add(site(f, mov_eax(0x2a), mov_eax(2))));
  auto validated = tx.validate();
  ASSERT_FALSE(validated);
  EXPECT_NE(validated.error().message.find("byte at " + at(f + 1) + " is 0x1f, expected 0x2a"), std::string::npos)
      << validated.error().describe();
  EXPECT_EQ(validated.error().address, f + 1) << validated.error().describe();
}

// One bad site refuses the whole batch: the good site is not applied either.
TEST(TransactionValidation, OneBadSiteRefusesTheBatch) {
  const std::uintptr_t good = emit_return(1);
  const std::uintptr_t bad = emit_return(2);
  const test::MemorySnapshot good_before(good, 6);
  Transaction tx;
  ASSERT_TRUE(tx.add(site(good, mov_eax(1), mov_eax(3))));
  ASSERT_TRUE(tx.add(site(bad, mov_eax(7), mov_eax(4))));
  expect_refused(tx, ErrorCode::kBytesMismatch, bad, 6, "site #1");
  EXPECT_TRUE(good_before.unchanged()) << good_before.differences();
}

TEST(TransactionValidation, RangeStartingOrEndingInsideAnInstruction) {
  const std::uintptr_t f = emit_return(1);  // B8 01 00 00 00 C3
  {
    Transaction tx;  // Starts inside the mov.
    ASSERT_TRUE(tx.add(site(f + 1, {0x01, 0x00}, {0x02, 0x00})));
    expect_refused(tx, ErrorCode::kNotBoundary, f, 6, "site #0");
  }
  {
    Transaction tx;  // Ends inside the mov.
    ASSERT_TRUE(tx.add(site(f, {0xB8, 0x01}, {0x90, 0x90})));
    expect_refused(tx, ErrorCode::kNotBoundary, f, 6, "site #0");
  }
}

// Bytes that are whole instructions on their own (four nops) but lie inside
// an instruction of the code (the mov's immediate) are refused: what the
// transaction decoded of its own bytes is used only where the walk over the
// code reaches the site's first byte. Twice: the second validation uses those decodes.
TEST(TransactionValidation, WholeInstructionsInsideAnInstructionAreRefused) {
  const std::uintptr_t f = test::emit([](asmjit::x86::Assembler& a) {
    const std::uint8_t code[] = {0xB8, 0x90, 0x90, 0x90, 0x90, 0xC3};  // mov eax, 0x90909090; ret
    a.embed(code, sizeof code);
  });
  Transaction tx;
  ASSERT_TRUE(tx.add(site(f + 1, {0x90, 0x90, 0x90, 0x90}, {0x90, 0x90, 0x90, 0xC3})));
  expect_refused(tx, ErrorCode::kNotBoundary, f, 6, "site #0");
  expect_refused(tx, ErrorCode::kNotBoundary, f, 6, "site #0");
}

TEST(TransactionValidation, ReplacementThatIsNotWholeInstructions) {
  const std::uintptr_t f = emit_return(1);
  Transaction tx;  // B8 .. is a 5-byte mov; `90 90 90 90 B8` ends inside a truncated mov.
  ASSERT_TRUE(tx.add(site(f, mov_eax(1), {0x90, 0x90, 0x90, 0x90, 0xB8})));
  const test::MemorySnapshot before(f, 6);
  auto committed = tx.commit();
  ASSERT_FALSE(committed);
  EXPECT_NE(committed.error().message.find("replacement"), std::string::npos) << committed.error().describe();
  EXPECT_TRUE(before.unchanged()) << before.differences();
}

// A jump into the middle of the range (from outside it) is refused.
TEST(TransactionValidation, BranchIntoTheSite) {
  using namespace asmjit;
  // test edi,edi (2); jnz inside (2); mov eax,1 (5); inside: mov ecx,2 (5); ret
  const std::uintptr_t f = test::emit([](x86::Assembler& a) {
    Label inside = a.newLabel();
    a.test(x86::edi, x86::edi);
    a.short_().jnz(inside);
    a.mov(x86::eax, 1);
    a.bind(inside);
    a.mov(x86::ecx, 2);
    a.ret();
  });
  Transaction tx;
  ASSERT_TRUE(tx.add(site(f + 4, test::bytes_at(f + 4, 10), std::vector<std::uint8_t>(10, 0x90))));
  expect_refused(tx, ErrorCode::kBranchInto, f, 15, at(f + 2));
}

// `int f(int x, void* to)`: 1 when x is 0, else jumps to `to`:
// f+0 mov eax, 1; f+5 test edi, edi; f+7 jz f+11; f+9 jmp rsi; f+11 ret.
std::uintptr_t emit_indirect_jump_unless_zero() {
  using namespace asmjit;
  return test::emit([](x86::Assembler& a) {
    Label out = a.newLabel();
    a.mov(x86::eax, 1);
    a.test(x86::edi, x86::edi);
    a.short_().jz(out);
    a.jmp(x86::rsi);
    a.bind(out);
    a.ret();
  });
}

// An indirect jump in the function cannot be proven not to land inside: refused unless allowed.
TEST(TransactionValidation, IndirectJumpIsUnprovableUnlessAllowed) {
  using namespace asmjit;
  const std::uintptr_t f = emit_indirect_jump_unless_zero();
  {
    Transaction tx;
    ASSERT_TRUE(tx.add(site(f, mov_eax(1), mov_eax(2))));
    expect_refused(tx, ErrorCode::kUnprovable, f, 12, "indirect jump");
  }
  TransactionOptions options;
  options.allow_unprovable = true;
  Transaction tx(options);
  ASSERT_TRUE(tx.add(site(f, mov_eax(1), mov_eax(2))));
  auto committed = tx.commit();
  ASSERT_TRUE(committed) << committed.error().describe();
  EXPECT_EQ(test::as<int (*)(int, void*)>(f)(0, nullptr), 2);
  ASSERT_TRUE(tx.revert());
}

// An indirect jump inside a site of several instructions may aim at a later
// one of them, and the site's out-of-line copy still runs it for a thread in
// flight: unprovable like any other (disasm::scan_branches). Until the one
// branch scan, validation dropped indirect jumps inside a site and committed this.
TEST(TransactionValidation, IndirectJumpInsideASiteOfSeveralInstructionsIsUnprovableUnlessAllowed) {
  using namespace asmjit;
  const std::uintptr_t f = emit_indirect_jump_unless_zero();  // The site: f+5 to f+11, test; jz; jmp rsi.
  const std::vector<std::uint8_t> old_bytes = test::bytes_at(f + 5, 6);
  ASSERT_EQ(old_bytes[4], 0xFF) << "expected test; jz rel8; jmp rsi";
  const std::vector<std::uint8_t> nop6{0x66, 0x0F, 0x1F, 0x44, 0x00, 0x00};
  {
    Transaction tx;  // Default options: allow_unprovable is off.
    ASSERT_TRUE(tx.add(site(f + 5, old_bytes, nop6)));
    expect_refused(tx, ErrorCode::kUnprovable, f, 12, "indirect jump at " + at(f + 9));
  }
  TransactionOptions options;
  options.allow_unprovable = true;
  Transaction tx(options);
  ASSERT_TRUE(tx.add(site(f + 5, old_bytes, nop6)));
  auto committed = tx.commit();
  ASSERT_TRUE(committed) << committed.error().describe();
  EXPECT_EQ(test::as<int (*)(int, void*)>(f)(1, nullptr), 1);  // Once the jump to rsi (null) would have crashed.
  auto reverted = tx.revert();
  ASSERT_TRUE(reverted) << reverted.error().describe();
  EXPECT_EQ(test::bytes_at(f + 5, 6), old_bytes);
}

// The same rule for the new code: several new instructions with an indirect
// jump among them could be committed but never reverted (the revert's scan
// finds the jump inside its range), so the commit is refused unless allowed
// (found by fuzz_transaction: a commit whose revert was refused).
TEST(TransactionValidation, NewCodeOfSeveralInstructionsWithAnIndirectJumpIsUnprovableUnlessAllowed) {
  const std::uintptr_t f = emit_indirect_jump_unless_zero();  // f+5 to f+11: test; jz; jmp rsi.
  const std::vector<std::uint8_t> jumping = test::bytes_at(f + 5, 6);
  const std::vector<std::uint8_t> nop6{0x66, 0x0F, 0x1F, 0x44, 0x00, 0x00};
  TransactionOptions allowed;
  allowed.allow_unprovable = true;
  Transaction to_nops(allowed);
  ASSERT_TRUE(to_nops.add(site(f + 5, jumping, nop6)));
  ASSERT_TRUE(to_nops.commit());
  {
    Transaction tx;  // Default options: allow_unprovable is off.
    ASSERT_TRUE(tx.add(site(f + 5, nop6, jumping)));
    expect_refused(tx, ErrorCode::kUnprovable, f, 12, "new code has an indirect jump at " + at(f + 9));
  }
  Transaction tx(allowed);
  ASSERT_TRUE(tx.add(site(f + 5, nop6, jumping)));
  auto committed = tx.commit();
  ASSERT_TRUE(committed) << committed.error().describe();
  auto reverted = tx.revert();
  ASSERT_TRUE(reverted) << reverted.error().describe();
  EXPECT_EQ(test::bytes_at(f + 5, 6), nop6);
}

// A site that is one indirect jump has no instruction boundary inside it for
// the jump to reach: replaced without allow_unprovable, in either direction.
TEST(TransactionValidation, AnIndirectJumpThatIsTheWholeSiteIsNotUnprovable) {
  using namespace asmjit;
  const std::uintptr_t f = emit_indirect_jump_unless_zero();  // The site: f+9, jmp rsi.
  const std::vector<std::uint8_t> old_bytes = test::bytes_at(f + 9, 2);
  ASSERT_EQ(old_bytes[0], 0xFF) << "expected jmp rsi";
  Transaction tx;
  ASSERT_TRUE(tx.add(site(f + 9, old_bytes, {0x66, 0x90})));
  auto committed = tx.commit();
  ASSERT_TRUE(committed) << committed.error().describe();
  EXPECT_EQ(test::as<int (*)(int, void*)>(f)(1, nullptr), 1);
  auto reverted = tx.revert();
  ASSERT_TRUE(reverted) << reverted.error().describe();
  EXPECT_EQ(test::bytes_at(f + 9, 2), old_bytes);
}

// A branch between two sites of one container, landing inside one of them,
// is found like any other (it is outside every replaced range).
TEST(TransactionValidation, BranchBetweenTwoSitesIntoOneOfThemIsRefused) {
  const std::uintptr_t f = test::emit([](asmjit::x86::Assembler& a) {
    // clang-format off
    const std::uint8_t code[] = {
        0xB8, 1, 0, 0, 0,     // f+0:  mov eax, 1      (site #0)
        0xEB, 0x05,           // f+5:  jmp f+12        (inside site #1)
        0x0F, 0x1F, 0x00,     // f+7:  nop dword [rax]
        0xB8, 2, 0, 0, 0,     // f+10: mov eax, 2      (site #1)
        0xC3,                 // f+15: ret
    };
    // clang-format on
    a.embed(code, sizeof code);
  });
  Transaction tx;
  ASSERT_TRUE(tx.add(site(f, mov_eax(1), mov_eax(3))));
  ASSERT_TRUE(tx.add(site(f + 10, mov_eax(2), mov_eax(4))));
  expect_refused(tx, ErrorCode::kBranchInto, f, 16, at(f + 5));
}

// One-byte instructions that branch nowhere (ret, nop, int3) are stepped over
// without decoding: the scan still resumes on the right boundary after them
// and finds the branch that follows.
TEST(TransactionValidation, BranchAfterSkippedOneByteInstructionsIsFound) {
  const std::uintptr_t f = test::emit([](asmjit::x86::Assembler& a) {
    // clang-format off
    const std::uint8_t code[] = {
        0xC3, 0x90, 0xCC,     // f+0:  ret; nop; int3
        0xEB, 0x04,           // f+3:  jmp f+9         (inside the site)
        0xB8, 2, 0, 0, 0,     // f+5:  mov eax, 2      (the site)
        0xC3,                 // f+10: ret
    };
    // clang-format on
    a.embed(code, sizeof code);
  });
  Transaction tx;
  ASSERT_TRUE(tx.add(site(f + 5, mov_eax(2), mov_eax(4))));
  expect_refused(tx, ErrorCode::kBranchInto, f, 11, at(f + 3));
}

// A call before the last instruction of a site would let a thread return into its middle.
TEST(TransactionValidation, CallInsideAMultiInstructionSite) {
  using namespace asmjit;
  const std::uintptr_t f = test::emit([&](x86::Assembler& a) {
    Label callee = a.newLabel();
    a.long_().sub(x86::rsp, 8);
    a.call(callee);
    a.long_().add(x86::rsp, 8);
    a.ret();
    a.bind(callee);
    a.mov(x86::eax, 3);
    a.ret();
  });
  const std::size_t n = 7 + 5 + 7;  // sub rsp,imm32; call rel32; add rsp,imm32
  ASSERT_EQ(test::bytes_at(f + 7, 1)[0], 0xE8) << "expected sub rsp,imm32 then call rel32";
  Transaction tx;
  ASSERT_TRUE(tx.add(site(f, test::bytes_at(f, n), std::vector<std::uint8_t>(n, 0x90))));
  // The same rule, with the same code, as for relocation and stolen hook bytes.
  expect_refused(tx, ErrorCode::kCannotRelocate, f, n + 1, "call");
}

TEST(TransactionValidation, UnmappedMemory) {
  const long page = ::sysconf(_SC_PAGESIZE);
  void* p = ::mmap(nullptr, page, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  ::munmap(p, page);
  Transaction tx;
  ASSERT_TRUE(tx.add(site(reinterpret_cast<std::uintptr_t>(p), {0}, {0x90})));
  auto validated = tx.validate();
  auto committed = tx.commit();
  ASSERT_FALSE(committed);
  EXPECT_FALSE(validated);
  EXPECT_EQ(committed.error().code, ErrorCode::kNotMapped) << committed.error().describe();
  EXPECT_NE(committed.error().message.find(at(p)), std::string::npos);
}

// A range that runs off the end of a mapping into unmapped memory.
TEST(TransactionValidation, RangeRunningIntoUnmappedMemory) {
  const long page = ::sysconf(_SC_PAGESIZE);
  auto* p =
      static_cast<std::uint8_t*>(::mmap(nullptr, 2 * page, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(p, MAP_FAILED);
  ::munmap(p + page, page);
  const auto last = reinterpret_cast<std::uintptr_t>(p + page - 2);
  Transaction tx;
  TransactionOptions options;
  ASSERT_TRUE(tx.add(site(last, {0, 0, 0, 0}, {0x90, 0x90, 0x90, 0x90})));
  expect_refused(tx, ErrorCode::kNotMapped, last, 2, at(reinterpret_cast<std::uintptr_t>(p + page)));
  ::munmap(p, page);
}

// MAP_SHARED: a memfd mapped shared and executable is never patched.
TEST(TransactionValidation, SharedMappingIsRefused) {
  const int fd = ::memfd_create("punch-shared-test", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 4096), 0);
  const std::uint8_t code[] = {0xB8, 1, 0, 0, 0, 0xC3};
  ASSERT_EQ(::pwrite(fd, code, sizeof code, 0), static_cast<ssize_t>(sizeof code));
  void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0);
  ASSERT_NE(p, MAP_FAILED);
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  disasm::FunctionExtent extent{a, a + 6, disasm::FunctionExtent::Source::kCaller};
  Transaction tx;
  ASSERT_TRUE(tx.add(Site{a, mov_eax(1), mov_eax(2), extent}));
  expect_refused(tx, ErrorCode::kPolicy, a, 6, "MAP_SHARED");
  ::munmap(p, 4096);
  ::close(fd);
}

// Non-executable memory (data) needs the explicit opt-in.
TEST(TransactionValidation, NonExecutableTargetWithoutOptIn) {
  static std::uint8_t data[16] = {1, 2, 3, 4};
  const auto a = reinterpret_cast<std::uintptr_t>(data);
  Transaction tx;
  ASSERT_TRUE(tx.add(site(a, {1, 2, 3, 4}, {5, 6, 7, 8})));
  expect_refused(tx, ErrorCode::kPolicy, a, 16, "allow_non_executable");
}

// Code with no symbol and no heap allocation: its boundaries cannot be checked unless allowed.
TEST(TransactionValidation, UnknownExtentIsUnprovableUnlessAllowed) {
  auto writer = runtime::CodeWriter::global();
  ASSERT_TRUE(writer);
  auto region = (*writer)->map_code(4096);
  ASSERT_TRUE(region) << region.error().describe();
  const std::uint8_t code[] = {0xB8, 1, 0, 0, 0, 0xC3};
  ASSERT_TRUE((*writer)->write(region->address, code));
  {
    Transaction tx;
    ASSERT_TRUE(tx.add(site(region->address, mov_eax(1), mov_eax(2))));
    expect_refused(tx, ErrorCode::kUnprovable, region->address, 6, "allow_unprovable");
  }
  TransactionOptions options;
  options.allow_unprovable = true;
  Transaction tx(options);
  ASSERT_TRUE(tx.add(site(region->address, mov_eax(1), mov_eax(2))));
  auto committed = tx.commit();
  ASSERT_TRUE(committed) << committed.error().describe();
  EXPECT_EQ(test::as<int (*)()>(region->address)(), 2);
  ASSERT_TRUE(tx.revert());
  EXPECT_EQ(test::as<int (*)()>(region->address)(), 1);
}

// Bytes changed by someone else between validate() and commit(): a conflict, not applied.
TEST(TransactionValidation, ChangedSinceValidationIsAConflict) {
  const std::uintptr_t f = emit_return(1);
  Transaction tx;
  ASSERT_TRUE(tx.add(site(f, mov_eax(1), mov_eax(2))));
  ASSERT_TRUE(tx.validate());
  Transaction other;
  ASSERT_TRUE(other.add(site(f, mov_eax(1), mov_eax(3))));
  ASSERT_TRUE(other.commit());
  const test::MemorySnapshot before(f, 6);
  auto committed = tx.commit();
  ASSERT_FALSE(committed);
  EXPECT_EQ(committed.error().code, ErrorCode::kConflict) << committed.error().describe();
  EXPECT_TRUE(before.unchanged()) << before.differences();
  EXPECT_EQ(test::as<int (*)()>(f)(), 3);
  // Reverting `other` after someone else changed its bytes is a conflict too.
  Transaction third;
  ASSERT_TRUE(third.add(site(f, mov_eax(3), mov_eax(4))));
  ASSERT_TRUE(third.commit());
  const test::MemorySnapshot before_revert(f, 6);
  auto reverted = other.revert();
  ASSERT_FALSE(reverted);
  EXPECT_EQ(reverted.error().code, ErrorCode::kConflict);
  EXPECT_TRUE(before_revert.unchanged()) << before_revert.differences();
}

// A caller-given extent is scanned in full whatever source it claims:
// kBoundedScan (punch's own fallback under allow_unprovable, when no extent is
// known) must not switch off the branch scan ...
TEST(TransactionValidation, CallerExtentClaimingABoundedScanStillFindsBranchesInto) {
  const std::uintptr_t f = test::emit([](asmjit::x86::Assembler& a) {
    // clang-format off
    const std::uint8_t code[] = {
        0xEB, 0x04,        // f+0: jmp f+6     (inside the site)
        0xB8, 2, 0, 0, 0,  // f+2: mov eax, 2  (the site)
        0xC3,              // f+7: ret
    };
    // clang-format on
    a.embed(code, sizeof code);
  });
  Transaction tx;
  const disasm::FunctionExtent extent{f, f + 8, disasm::FunctionExtent::Source::kBoundedScan};
  ASSERT_TRUE(tx.add(Site{f + 2, mov_eax(2), mov_eax(4), extent}));
  expect_refused(tx, ErrorCode::kBranchInto, f, 8, at(f + 6));
}

// ... nor the indirect-jump check, which only allow_unprovable waives.
TEST(TransactionValidation, CallerExtentClaimingABoundedScanStillRefusesIndirectJumps) {
  const std::uintptr_t f = test::emit([](asmjit::x86::Assembler& a) {
    // clang-format off
    const std::uint8_t code[] = {
        0xFF, 0xE0,        // f+0: jmp rax
        0xB8, 2, 0, 0, 0,  // f+2: mov eax, 2  (the site)
        0xC3,              // f+7: ret
    };
    // clang-format on
    a.embed(code, sizeof code);
  });
  Transaction tx;
  const disasm::FunctionExtent extent{f, f + 8, disasm::FunctionExtent::Source::kBoundedScan};
  ASSERT_TRUE(tx.add(Site{f + 2, mov_eax(2), mov_eax(4), extent}));
  expect_refused(tx, ErrorCode::kUnprovable, f, 8, "indirect jump");
}

// The executable mappings of the process, as /proc/self/maps lists them.
std::vector<std::string> executable_mappings() {
  std::vector<std::string> out;
  std::FILE* maps = std::fopen("/proc/self/maps", "r");
  if (!maps) return out;
  char line[512];
  while (std::fgets(line, sizeof line, maps)) {
    char perms[5] = {};
    if (std::sscanf(line, "%*x-%*x %4s", perms) == 1 && perms[2] == 'x') out.emplace_back(line);
  }
  std::fclose(maps);
  return out;
}

// validate() touches nothing, not even the address space: new code whose
// out-of-line copy needs memory near a RIP-relative operand far from every
// arena of the heap is checked without mapping an arena there (commit may).
TEST(TransactionValidation, ValidateMapsNothing) {
  auto writer = runtime::CodeWriter::global();
  ASSERT_TRUE(writer) << writer.error().describe();
  if ((*writer)->method() == runtime::WriteMethod::kDualMap)
    GTEST_SKIP() << "dual-map regions are MAP_SHARED, which the write policy refuses outside the heap";
  ASSERT_TRUE(runtime::CodeHeap::global());
  // A page far from the program, its libraries and the heap's arenas.
  constexpr std::uintptr_t kFar = 0x234500000000;
  auto region = (*writer)->map_code(4096, runtime::AddressWindow{kFar, kFar + (std::uintptr_t{1} << 32)});
  ASSERT_TRUE(region) << region.error().describe();
  const std::uintptr_t page = region->address;
  const std::uint8_t code[] = {0x0F, 0x1F, 0x80, 0, 0, 0, 0, 0xC3};  // nop dword [rax+0]; ret
  ASSERT_TRUE((*writer)->write(page, code));
  // mov eax, [rip+0xf9] (reads page+0x100); nop: two instructions, one reading data outside the site.
  const std::vector<std::uint8_t> replacement{0x8B, 0x05, 0xF9, 0, 0, 0, 0x90};
  Transaction tx;
  const disasm::FunctionExtent extent{page, page + 8, disasm::FunctionExtent::Source::kCaller};
  ASSERT_TRUE(tx.add(Site{page, {code, code + 7}, replacement, extent}));

  const std::vector<std::string> before = executable_mappings();
  auto validated = tx.validate();
  const std::vector<std::string> after = executable_mappings();
  ASSERT_TRUE(validated) << validated.error().describe();
  EXPECT_EQ(before, after) << "validate() mapped memory";

  auto committed = tx.commit();
  ASSERT_TRUE(committed) << committed.error().describe();
  ASSERT_TRUE(tx.revert());
  EXPECT_TRUE((*writer)->unmap_code(*region));
}

// Sizes: empty sites and mismatched lengths are refused by add().
TEST(TransactionValidation, BadShapes) {
  Transaction tx;
  EXPECT_EQ(tx.add(site(0x1000, {}, {})).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(tx.add(site(0x1000, {1}, {1, 2})).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(tx.add(site(UINTPTR_MAX - 1, {1, 2, 3}, {1, 2, 3})).error().code, ErrorCode::kInvalidArgument);
  EXPECT_TRUE(tx.sites().empty());
}

}  // namespace
}  // namespace punch::patcher

namespace punch::patcher {
namespace {

// A mistyped PUNCH_TRAP (say, for patching under a debugger) is an error, not
// a silent int3: commit refuses, memory unchanged; a valid value commits.
TEST(TransactionValidation, UnknownPunchTrapRefusesCommit) {
  const std::uintptr_t f = test::emit_return(1);
  const test::MemorySnapshot before(f, 6);
  ::setenv("PUNCH_TRAP", "htl", 1);
  Transaction tx;
  ASSERT_TRUE(tx.add(test::site(f, test::mov_eax(1), test::mov_eax(2))));
  auto refused = tx.commit();
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(refused.error().message.find("PUNCH_TRAP"), std::string::npos) << refused.error().describe();
  EXPECT_TRUE(before.unchanged()) << before.differences();

  ::setenv("PUNCH_TRAP", "hlt", 1);
  auto committed = tx.commit();
  ::unsetenv("PUNCH_TRAP");
  ASSERT_TRUE(committed) << committed.error().describe();
  EXPECT_EQ(test::as<int (*)()>(f)(), 2);
  EXPECT_TRUE(tx.revert());
}

}  // namespace
}  // namespace punch::patcher

namespace punch::patcher {
namespace {

// `mov eax, 1; mov ecx, 2; ret`: site #0 is 5 bytes at f, site #1 5 bytes at f+5.
std::uintptr_t emit_two_sites() {
  return test::emit([](asmjit::x86::Assembler& a) {
    a.mov(asmjit::x86::eax, 1);
    a.mov(asmjit::x86::ecx, 2);
    a.ret();
  });
}

// Found by fuzz_transaction: new code that branches into another site of the
// same transaction committed, and then could not be reverted. Refused at
// commit, memory unchanged.
TEST(TransactionValidation, NewCodeBranchingIntoAnotherSiteIsRefused) {
  const std::uintptr_t f = emit_two_sites();
  const test::MemorySnapshot before(f, 11);
  Transaction tx;
  ASSERT_TRUE(tx.add(test::site(f, test::mov_eax(1), test::mov_eax(3))));
  ASSERT_TRUE(tx.add(test::site(f + 5, test::bytes_at(f + 5, 5), test::jmp_rel32(f + 5, f + 2))));
  auto committed = tx.commit();
  ASSERT_FALSE(committed) << "new code jumping into the middle of site #0 was committed";
  EXPECT_EQ(committed.error().code, ErrorCode::kBranchInto) << committed.error().describe();
  EXPECT_NE(committed.error().message.find(at(f + 2)), std::string::npos) << committed.error().describe();
  EXPECT_TRUE(before.unchanged()) << before.differences();
}

// The rule looks at every instruction of the new code, not only its first,
// and the message names both sites and the branch.
TEST(TransactionValidation, NewCodeBranchingIntoAnotherSiteFromALaterInstructionIsRefused) {
  const std::uintptr_t f = emit_two_sites();
  const test::MemorySnapshot before(f, 11);
  // nop; nop; nop; jmp f+2 (rel8 from f+10: -8).
  const std::vector<std::uint8_t> new_code{0x90, 0x90, 0x90, 0xEB, 0xF8};
  Transaction tx;
  ASSERT_TRUE(tx.add(test::site(f, test::mov_eax(1), test::mov_eax(3))));
  ASSERT_TRUE(tx.add(test::site(f + 5, test::bytes_at(f + 5, 5), new_code)));
  auto committed = tx.commit();
  ASSERT_FALSE(committed) << "new code jumping into the middle of site #0 was committed";
  EXPECT_EQ(committed.error().code, ErrorCode::kBranchInto) << committed.error().describe();
  const std::string expected = "site #0 at " + at(f) + ": the new code of site #1 at " + at(f + 5) + " branches from " +
                               at(f + 8) + " to " + at(f + 2) + ", inside the site";
  EXPECT_EQ(committed.error().message, expected);
  EXPECT_TRUE(before.unchanged()) << before.differences();
}

// Branching to another site's first byte, or inside its own range, is fine:
// both stay instruction boundaries whichever code the sites hold.
TEST(TransactionValidation, NewCodeBranchingToAnotherSitesStartOrIntoItselfIsAccepted) {
  const std::uintptr_t f = emit_two_sites();
  const test::MemorySnapshot before(f, 11);
  // site #0: jmp f+5 (the start of site #1); site #1: jmp f+8; nop; nop; nop (into itself).
  const std::vector<std::uint8_t> to_start{0xEB, 0x03, 0x90, 0x90, 0x90};
  const std::vector<std::uint8_t> to_self{0xEB, 0x01, 0x90, 0x90, 0x90};
  Transaction tx;
  ASSERT_TRUE(tx.add(test::site(f, test::bytes_at(f, 5), to_start)));
  ASSERT_TRUE(tx.add(test::site(f + 5, test::bytes_at(f + 5, 5), to_self)));
  auto committed = tx.commit();
  ASSERT_TRUE(committed) << committed.error().describe();
  EXPECT_EQ(test::bytes_at(f, 5), to_start);
  auto reverted = tx.revert();
  ASSERT_TRUE(reverted) << reverted.error().describe();
  EXPECT_TRUE(before.unchanged()) << before.differences();
}

}  // namespace
}  // namespace punch::patcher

namespace punch::patcher {
namespace {

// New code of several instructions must be undoable live, which needs an
// out-of-line copy within rel32 reach of every RIP-relative operand: one
// operand ~2 GiB below and one ~2 GiB above leave no such place.
TEST(TransactionValidation, NewCodeNoCopyCouldReachIsRefused) {
  const std::uintptr_t f = test::emit([](asmjit::x86::Assembler& a) {
    a.mov(asmjit::x86::eax, 1);  // 5 bytes
    a.mov(asmjit::x86::ecx, 2);  // 5 bytes
    a.nop();
    a.nop();  // site: these 12 bytes
    a.ret();
  });
  const test::MemorySnapshot before(f, 13);
  // add [rip-0x7fffff00], edi; add [rip+0x7fffff00], edi (6 bytes each).
  std::vector<std::uint8_t> new_code = {0x01, 0x3D, 0x00, 0x01, 0x00, 0x80, 0x01, 0x3D, 0x00, 0xFF, 0xFF, 0x7F};
  Transaction tx;
  ASSERT_TRUE(tx.add(test::site(f, test::bytes_at(f, 12), new_code)));
  auto committed = tx.commit();
  ASSERT_FALSE(committed) << "new code that no copy could run was committed";
  EXPECT_EQ(committed.error().code, ErrorCode::kCannotRelocate) << committed.error().describe();
  EXPECT_NE(committed.error().message.find("undone live"), std::string::npos) << committed.error().describe();
  EXPECT_TRUE(before.unchanged()) << before.differences();
}

}  // namespace
}  // namespace punch::patcher
