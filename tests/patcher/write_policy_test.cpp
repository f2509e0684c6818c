// The write policy (issue 6): /proc/self/mem can write anywhere, so punch
// patches only executable private mappings unless the caller opts in for
// data (TransactionOptions::allow_non_executable); an unmapped address or a
// MAP_SHARED mapping is refused even then, and a hook never targets data.
// Every refusal compares the memory it was asked to change byte for byte.
#include <gtest/gtest.h>

#include <elf.h>
#include <link.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include <punch/patcher/hook.hpp>
#include <punch/patcher/transaction.hpp>
#include <punch/runtime/maps.hpp>
#include <punch/runtime/safe_read.hpp>

#include "hook_targets.hpp"
#include "live_test_support.hpp"
#include "memory_snapshot.hpp"

namespace punch::patcher {
namespace {

// Writable data of this binary (.data).
std::uint8_t g_data[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
// Read-only data of this binary (.rodata); read through a volatile pointer so it is not folded.
extern const std::uint8_t g_rodata[16];
const std::uint8_t g_rodata[16] = {0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 1, 2, 3, 4, 5, 6, 7, 8};

std::vector<std::uint8_t> read(std::uintptr_t address, std::size_t n) {
  auto bytes = runtime::safe_read_exact(address, n);
  EXPECT_TRUE(bytes) << bytes.error().describe();
  return bytes ? *bytes : std::vector<std::uint8_t>{};
}

std::vector<std::uint8_t> flipped(std::vector<std::uint8_t> bytes) {
  for (auto& b : bytes) b = static_cast<std::uint8_t>(~b);
  return bytes;
}

// Asks to flip `n` bytes at `address` (expected = what is there now) and expects
// a refusal with `code` mentioning `must_mention`; the bytes must be unchanged.
void expect_refused(std::uintptr_t address, std::size_t n, TransactionOptions options, ErrorCode code,
                    const std::string& must_mention) {
  const test::MemorySnapshot before(address, n);
  Transaction tx(options);
  ASSERT_TRUE(tx.add(test::site(address, before.bytes(), flipped(before.bytes()))));
  auto validated = tx.validate();
  auto committed = tx.commit();
  ASSERT_FALSE(validated);
  ASSERT_FALSE(committed);
  EXPECT_EQ(committed.error().code, code) << committed.error().describe();
  EXPECT_NE(committed.error().message.find(must_mention), std::string::npos) << committed.error().describe();
  EXPECT_NE(committed.error().message.find(at(address)), std::string::npos) << committed.error().describe();
  EXPECT_TRUE(before.unchanged()) << before.differences();
  EXPECT_FALSE(tx.committed());
}

TransactionOptions opted_in() {
  TransactionOptions options;
  options.allow_non_executable = true;
  return options;
}

// The main program's GOT: DT_PLTGOT of its dynamic section (dl_iterate_phdr lists it first, with an empty name).
std::uintptr_t main_program_got() {
  std::uintptr_t got = 0;
  dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* out) -> int {
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          if (info->dlpi_phdr[i].p_type != PT_DYNAMIC) continue;
          const auto* dyn = reinterpret_cast<const ElfW(Dyn)*>(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
          for (; dyn->d_tag != DT_NULL; ++dyn)
            if (dyn->d_tag == DT_PLTGOT) {
              // glibc relocates the entry in place in a writable .dynamic; otherwise it is an offset.
              std::uintptr_t p = dyn->d_un.d_ptr;
              if (p < info->dlpi_addr) p += info->dlpi_addr;
              *static_cast<std::uintptr_t*>(out) = p;
            }
        }
        return 1;  // The main program comes first: stop there.
      },
      &got);
  return got;
}

TEST(WritePolicy, DataNeedsTheOptIn) {
  expect_refused(reinterpret_cast<std::uintptr_t>(g_data), sizeof g_data, {}, ErrorCode::kPolicy,
                 "allow_non_executable");
}

TEST(WritePolicy, OptInPatchesDataAndRevertRestoresIt) {
  const auto a = reinterpret_cast<std::uintptr_t>(g_data);
  const auto old = read(a, 4);
  const std::vector<std::uint8_t> now{0xAA, 0xBB, 0xCC, 0xDD};
  const test::MemorySnapshot neighbours(a + 4, sizeof g_data - 4);
  Transaction tx(opted_in());
  ASSERT_TRUE(tx.add(test::site(a, old, now)));
  auto committed = tx.commit();
  ASSERT_TRUE(committed) << committed.error().describe();
  EXPECT_EQ(read(a, 4), now);
  EXPECT_TRUE(neighbours.unchanged()) << neighbours.differences();
  ASSERT_TRUE(tx.revert());
  EXPECT_EQ(read(a, 4), old);
}

TEST(WritePolicy, ReadOnlyDataNeedsTheOptIn) {
  const auto a = reinterpret_cast<std::uintptr_t>(g_rodata);
  auto mapping = runtime::find_mapping(a);
  ASSERT_TRUE(mapping);
  ASSERT_FALSE(mapping->writable) << "control: g_rodata is in a read-only mapping";
  ASSERT_FALSE(mapping->executable);
  expect_refused(a, sizeof g_rodata, {}, ErrorCode::kPolicy, "allow_non_executable");
}

TEST(WritePolicy, GotNeedsTheOptIn) {
  const std::uintptr_t got = main_program_got();
  ASSERT_NE(got, 0u) << "no DT_PLTGOT in the main program";
  auto mapping = runtime::find_mapping(got);
  ASSERT_TRUE(mapping) << at(got);
  ASSERT_FALSE(mapping->executable);
  expect_refused(got, 3 * sizeof(void*), {}, ErrorCode::kPolicy, "allow_non_executable");
}

TEST(WritePolicy, StackNeedsTheOptIn) {
  volatile std::uint8_t local[16] = {9, 8, 7, 6, 5, 4, 3, 2, 1};
  expect_refused(reinterpret_cast<std::uintptr_t>(local), sizeof local, {}, ErrorCode::kPolicy, "allow_non_executable");
}

// Even with the opt-in: an unmapped address is refused (and stays unmapped).
TEST(WritePolicy, UnmappedIsRefusedEvenWithTheOptIn) {
  const long page = ::sysconf(_SC_PAGESIZE);
  void* p = ::mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  ASSERT_EQ(::munmap(p, page), 0);
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  Transaction tx(opted_in());
  ASSERT_TRUE(tx.add(test::site(a, {0, 0, 0, 0}, {1, 2, 3, 4})));
  auto committed = tx.commit();
  ASSERT_FALSE(committed);
  EXPECT_EQ(committed.error().code, ErrorCode::kNotMapped) << committed.error().describe();
  EXPECT_NE(committed.error().message.find(at(a)), std::string::npos) << committed.error().describe();
  EXPECT_FALSE(runtime::find_mapping(a)) << "the write created a mapping";
}

// Even with the opt-in: MAP_SHARED memory (other processes would see the change) is refused.
TEST(WritePolicy, SharedDataIsRefusedEvenWithTheOptIn) {
  auto* p =
      static_cast<std::uint8_t*>(::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(p, MAP_FAILED);
  for (int i = 0; i < 16; ++i) p[i] = static_cast<std::uint8_t>(i * 3);
  expect_refused(reinterpret_cast<std::uintptr_t>(p), 16, opted_in(), ErrorCode::kPolicy, "MAP_SHARED");
  ::munmap(p, 4096);
}

std::atomic<long (*)(long)> g_original{nullptr};
long detour(long x) { return g_original.load()(x) + 1; }

// A hook redirects code: a target in data, read-only data, the GOT or the
// stack is refused whatever the transaction options say, memory unchanged.
TEST(WritePolicy, HookOnNonExecutableMemoryIsRefused) {
  volatile std::uint8_t local[32] = {0x48, 0x89, 0xF8, 0xC3};  // mov rax, rdi; ret — code-like bytes in data.
  const std::uintptr_t targets[] = {reinterpret_cast<std::uintptr_t>(g_data),
                                    reinterpret_cast<std::uintptr_t>(g_rodata), main_program_got(),
                                    reinterpret_cast<std::uintptr_t>(local)};
  for (std::uintptr_t target : targets) {
    SCOPED_TRACE(at(target));
    ASSERT_NE(target, 0u);
    const test::MemorySnapshot before(target, 16);
    HookOptions options;
    options.transaction.allow_non_executable = true;  // Does not make data hookable.
    options.transaction.allow_unprovable = true;
    options.function = disasm::FunctionExtent{target, target + 16, disasm::FunctionExtent::Source::kCaller};
    auto hook = Hook::install(reinterpret_cast<void*>(target), reinterpret_cast<void*>(detour), options);
    ASSERT_FALSE(hook);
    EXPECT_EQ(hook.error().code, ErrorCode::kPolicy) << hook.error().describe();
    EXPECT_NE(hook.error().message.find("non-executable"), std::string::npos) << hook.error().describe();
    EXPECT_NE(hook.error().message.find(at(target)), std::string::npos) << hook.error().describe();
    EXPECT_TRUE(before.unchanged()) << before.differences();
  }
}

TEST(WritePolicy, HookOnUnmappedAddressIsRefused) {
  const long page = ::sysconf(_SC_PAGESIZE);
  void* p = ::mmap(nullptr, page, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  ASSERT_EQ(::munmap(p, page), 0);
  HookOptions options;
  options.function =
      disasm::FunctionExtent{reinterpret_cast<std::uintptr_t>(p), reinterpret_cast<std::uintptr_t>(p) + 16,
                             disasm::FunctionExtent::Source::kCaller};
  auto hook = Hook::install(p, reinterpret_cast<void*>(detour), options);
  ASSERT_FALSE(hook);
  EXPECT_EQ(hook.error().code, ErrorCode::kNotMapped) << hook.error().describe();
  EXPECT_NE(hook.error().message.find(at(p)), std::string::npos) << hook.error().describe();
  EXPECT_FALSE(runtime::find_mapping(reinterpret_cast<std::uintptr_t>(p)));
}

// Control: code of this binary (an executable private file mapping) is hookable.
TEST(WritePolicy, CodeOfThisBinaryIsHookable) {
  const test::MemorySnapshot before(reinterpret_cast<void*>(hook_target_square), 16);
  HookOptions options;
  options.enabled = false;
  auto hook = Hook::install(reinterpret_cast<void*>(hook_target_square), reinterpret_cast<void*>(detour), options);
  ASSERT_TRUE(hook) << hook.error().describe();
  g_original = hook->original<long (*)(long)>();
  ASSERT_TRUE(hook->enable());
  long (*volatile f)(long) = hook_target_square;
  EXPECT_EQ(f(3), 9);  // 3*3 - 1 + 1
  ASSERT_TRUE(hook->remove());
  EXPECT_TRUE(before.unchanged()) << before.differences();
}

}  // namespace
}  // namespace punch::patcher
