// Inline hooks for real: install, call through detour and trampoline, chain,
// disable, remove with the original bytes back — or a clean refusal with
// memory untouched.
#include <gtest/gtest.h>

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <punch/disasm/validate.hpp>
#include <punch/patcher/hook.hpp>
#include <punch/runtime/code_heap.hpp>
#include <punch/runtime/fault_injection.hpp>
#include <punch/runtime/safe_read.hpp>

#include "hook_targets.hpp"
#include "child_process.hpp"

#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#endif
#ifndef PR_MDWE_REFUSE_EXEC_GAIN
#define PR_MDWE_REFUSE_EXEC_GAIN 1
#endif
#include "disasm_corpus.hpp"
#include "live_test_support.hpp"
#include "memory_snapshot.hpp"

namespace punch::patcher {
namespace {

std::atomic<Fn> g_original{nullptr};
std::atomic<long> g_calls{0};

long plus_1000(long x) {
  g_calls.fetch_add(1, std::memory_order_relaxed);
  return g_original.load()(x) + 1000;
}

long pass_through(long x) {
  g_calls.fetch_add(1, std::memory_order_relaxed);
  return g_original.load()(x);
}

// Installs disabled, publishes the trampoline, then enables: the detour never sees a null original.
Result<Hook> hook_with(Fn target, Fn detour, HookOptions options = {}) {
  options.enabled = false;
  auto hook = Hook::install(reinterpret_cast<void*>(target), reinterpret_cast<void*>(detour), options);
  if (!hook) return hook;
  g_original = hook->original<Fn>();
  if (auto s = hook->enable(); !s) return tl::unexpected<Error>(s.error());
  return hook;
}

TEST(Hook, MultiInstructionPrologueHooksCallsTheOriginalAndRemovesExactly) {
  test::MemorySnapshot before(reinterpret_cast<void*>(hook_target_prologue), 32);
  auto hook = hook_with(hook_target_prologue, plus_1000);
  ASSERT_TRUE(hook) << hook.error().describe();
  const HookInfo info = hook->info();
  EXPECT_EQ(info.kind, HookEntryKind::kStolenRel32);
  EXPECT_EQ(info.entry, reinterpret_cast<std::uintptr_t>(hook_target_prologue) + 4);  // After endbr64.
  EXPECT_NE(before.differences(), "");
  for (long x = -50; x <= 50; ++x) {
    EXPECT_EQ(call(hook_target_prologue, x), 3 * x + 7 + 1000);
    EXPECT_EQ(call(hook->original<Fn>(), x), 3 * x + 7);
  }
  ASSERT_TRUE(hook->remove());
  EXPECT_FALSE(hook->installed());
  EXPECT_EQ(before.differences(), "");
  EXPECT_EQ(call(hook_target_prologue, 5), 22);
}

TEST(Hook, DisableAndEnableToggleTheDetour) {
  test::MemorySnapshot before(reinterpret_cast<void*>(hook_target_square), 32);
  auto hook = hook_with(hook_target_square, plus_1000);
  ASSERT_TRUE(hook) << hook.error().describe();
  EXPECT_EQ(call(hook_target_square, 4), 1015);
  ASSERT_TRUE(hook->disable());
  EXPECT_FALSE(hook->enabled());
  EXPECT_EQ(before.differences(), "");  // Disabled: the original bytes are back.
  EXPECT_EQ(call(hook_target_square, 4), 15);
  ASSERT_TRUE(hook->enable());
  EXPECT_EQ(call(hook_target_square, 4), 1015);
  ASSERT_TRUE(hook->remove());
  EXPECT_EQ(before.differences(), "");
}

TEST(Hook, PatchableEntriesArePreferredAndNeedNoStolenInstructions) {
  for (Fn target : {hook_target_pad_nop5, hook_target_pad_gcc}) {
    const long bias = target == hook_target_pad_nop5 ? 100 : 200;
    test::MemorySnapshot before(reinterpret_cast<void*>(target), 32);
    auto hook = hook_with(target, plus_1000);
    ASSERT_TRUE(hook) << hook.error().describe();
    EXPECT_EQ(hook->info().kind, HookEntryKind::kPatchableEntry);
    EXPECT_EQ(hook->info().stolen, 5u);
    for (long x = 0; x < 20; ++x) EXPECT_EQ(call(target, x), x + bias + 1000);
    ASSERT_TRUE(hook->remove());
    EXPECT_EQ(before.differences(), "");
    EXPECT_EQ(call(target, 1), 1 + bias);
  }
}

TEST(Hook, AbsoluteEntryFormWorksAndRemovesExactly) {
  test::MemorySnapshot before(reinterpret_cast<void*>(hook_target_prologue), 32);
  HookOptions options;
  options.force_absolute_entry = true;
  auto hook = hook_with(hook_target_prologue, plus_1000, options);
  ASSERT_TRUE(hook) << hook.error().describe();
  EXPECT_EQ(hook->info().kind, HookEntryKind::kStolenAbsolute);
  EXPECT_GE(hook->info().stolen, 16u);
  for (long x = 0; x < 20; ++x) EXPECT_EQ(call(hook_target_prologue, x), 3 * x + 1007);
  auto removed = hook->remove();
  ASSERT_TRUE(removed) << removed.error().describe();
  EXPECT_EQ(before.differences(), "");
}

TEST(Hook, RefusalsLeaveMemoryUntouched) {
  test::MemorySnapshot call_mid(reinterpret_cast<void*>(hook_target_call_mid), 32);
  auto refused = Hook::install(reinterpret_cast<void*>(hook_target_call_mid), reinterpret_cast<void*>(plus_1000));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kCannotRelocate) << refused.error().describe();
  EXPECT_EQ(call_mid.differences(), "");

  auto null_detour = Hook::install(reinterpret_cast<void*>(hook_target_square), nullptr);
  ASSERT_FALSE(null_detour);
  EXPECT_EQ(null_detour.error().code, ErrorCode::kInvalidArgument);
}

// Chained detours: square(x) -> outer -> inner -> original.
std::atomic<Fn> g_inner_original{nullptr};
std::atomic<Fn> g_outer_original{nullptr};
long inner_plus_1(long x) { return g_inner_original.load()(x) + 1; }
long outer_times_2(long x) { return g_outer_original.load()(x) * 2; }

TEST(Hook, ChainedHooksWrapAndRemoveInAnyOrder) {
  test::MemorySnapshot before(reinterpret_cast<void*>(hook_target_square), 32);
  for (bool inner_first : {true, false}) {
    SCOPED_TRACE(inner_first ? "remove inner first" : "remove outer first");
    HookOptions disabled;
    disabled.enabled = false;
    auto inner =
        Hook::install(reinterpret_cast<void*>(hook_target_square), reinterpret_cast<void*>(inner_plus_1), disabled);
    ASSERT_TRUE(inner) << inner.error().describe();
    g_inner_original = inner->original<Fn>();
    ASSERT_TRUE(inner->enable());
    auto outer =
        Hook::install(reinterpret_cast<void*>(hook_target_square), reinterpret_cast<void*>(outer_times_2), disabled);
    ASSERT_TRUE(outer) << outer.error().describe();
    g_outer_original = outer->original<Fn>();
    ASSERT_TRUE(outer->enable());
    EXPECT_EQ(outer->info().chain_position, 1u);
    EXPECT_EQ(call(hook_target_square, 3), (9 - 1 + 1) * 2);

    ASSERT_TRUE(outer->disable());  // Skipping the outer detour keeps the inner one.
    EXPECT_EQ(call(hook_target_square, 3), 9);
    ASSERT_TRUE(outer->enable());
    ASSERT_TRUE(inner->disable());  // Skipping the inner one: the outer's original is the real one.
    EXPECT_EQ(call(hook_target_square, 3), 16);
    ASSERT_TRUE(inner->enable());

    if (inner_first) {
      ASSERT_TRUE(inner->remove());
      EXPECT_EQ(call(hook_target_square, 3), 8 * 2);
      EXPECT_EQ(call(outer->original<Fn>(), 3), 8);
      ASSERT_TRUE(outer->remove());
    } else {
      ASSERT_TRUE(outer->remove());
      EXPECT_EQ(call(hook_target_square, 3), 9);
      ASSERT_TRUE(inner->remove());
    }
    EXPECT_EQ(before.differences(), "");
    EXPECT_EQ(call(hook_target_square, 3), 8);
  }
}

// libc's own puts (under ASan, `::puts` in this binary is the sanitizer's interceptor).
std::uintptr_t libc_puts() {
  auto address = resolve_symbol({"puts", "", "libc.so.6"});
  return address ? reinterpret_cast<std::uintptr_t>(*address) : 0;
}

TEST(Hook, ResolvesSymbolsByNameVersionAndObject) {
  const std::uintptr_t puts_address = libc_puts();
  ASSERT_NE(puts_address, 0u);
  Dl_info info{};
  ASSERT_NE(dladdr(reinterpret_cast<void*>(puts_address), &info), 0);
  EXPECT_NE(std::string(info.dli_fname).find("libc.so"), std::string::npos) << info.dli_fname;
  auto versioned = resolve_symbol({"puts", "GLIBC_2.2.5", "libc.so.6"});
  ASSERT_TRUE(versioned) << versioned.error().describe();
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(*versioned), puts_address);
  auto missing = resolve_symbol({"punch_no_such_symbol", "", ""});
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("punch_no_such_symbol"), std::string::npos);
  // The reason comes from dlerror, read before the object is closed again
  // (tests/CMakeLists.txt runs this test under valgrind too).
  auto missing_in_libc = resolve_symbol({"punch_no_such_symbol", "", "libc.so.6"});
  ASSERT_FALSE(missing_in_libc);
  EXPECT_EQ(missing_in_libc.error().code, ErrorCode::kNotMapped);
  EXPECT_NE(missing_in_libc.error().message.find("`libc.so.6` ("), std::string::npos)
      << missing_in_libc.error().message;
  EXPECT_NE(missing_in_libc.error().message.find("undefined symbol: punch_no_such_symbol"), std::string::npos)
      << missing_in_libc.error().message;
  auto not_loaded = resolve_symbol({"puts", "", "libpunch-not-loaded.so"});
  ASSERT_FALSE(not_loaded);
  EXPECT_EQ(not_loaded.error().code, ErrorCode::kNotMapped);
}

std::string hex(const std::vector<std::uint8_t>& bytes) {
  std::string out;
  char buf[4];
  for (auto b : bytes) out += (std::snprintf(buf, sizeof buf, "%02x", b), buf);
  return out;
}

// Run as a child (fork+exec of this binary with PUNCH_HOOK_TEST_PRINT_PUTS set):
// print the first 16 bytes of this process's own libc puts, and exit before any test runs.
const bool g_child_mode = [] {
  if (std::getenv("PUNCH_HOOK_TEST_PRINT_PUTS") == nullptr) return false;
  auto bytes = runtime::safe_read_exact(libc_puts(), 16);
  std::printf("%s\n", bytes ? hex(*bytes).c_str() : "unreadable");
  std::fflush(stdout);
  _exit(0);
}();

// The file and file offset that back `address`, from /proc/self/maps.
bool file_backing(std::uintptr_t address, std::string& path, std::uint64_t& offset) {
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    std::istringstream in(line);
    std::string range, perms, dev, inode;
    std::uint64_t file_offset = 0;
    in >> range >> perms >> std::hex >> file_offset >> dev >> inode >> path;
    const auto dash = range.find('-');
    const auto lo = std::stoull(range.substr(0, dash), nullptr, 16),
               hi = std::stoull(range.substr(dash + 1), nullptr, 16);
    if (address >= lo && address < hi && !path.empty() && path[0] == '/') {
      offset = file_offset + (address - lo);
      return true;
    }
  }
  return false;
}

std::atomic<int (*)(const char*)> g_original_puts{nullptr};
std::atomic<int> g_puts_calls{0};
int counting_puts(const char* text) {
  g_puts_calls.fetch_add(1);
  return g_original_puts.load()(text);
}

// libc's puts hooked in this process only: the page is copied on write, so the
// libc file and a freshly exec'd child still hold the original bytes.
TEST(Hook, LibcPutsHookedHereOnlyNotInTheFileNorInAChild) {
  const std::uintptr_t puts_address = libc_puts();
  ASSERT_NE(puts_address, 0u);
  auto original = runtime::safe_read_exact(puts_address, 16);
  ASSERT_TRUE(original) << original.error().describe();
  std::string path;
  std::uint64_t offset = 0;
  ASSERT_TRUE(file_backing(puts_address, path, offset)) << "puts is not file-backed";

  HookOptions disabled;
  disabled.enabled = false;
  auto hook = Hook::install(SymbolRef{"puts", "", "libc.so.6"}, reinterpret_cast<void*>(counting_puts), disabled);
  ASSERT_TRUE(hook) << hook.error().describe();
  g_original_puts = hook->original<int (*)(const char*)>();
  ASSERT_TRUE(hook->enable());
  g_puts_calls = 0;
  int (*volatile call_puts)(const char*) = reinterpret_cast<int (*)(const char*)>(puts_address);
  call_puts("[hook test] puts through the trampoline");
  EXPECT_EQ(g_puts_calls.load(), 1);
  auto hooked = runtime::safe_read_exact(puts_address, 16);
  ASSERT_TRUE(hooked);
  EXPECT_NE(hex(*hooked), hex(*original));

  // The file on disk: unchanged at puts's offset.
  std::vector<std::uint8_t> on_disk(16);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << path;
  EXPECT_EQ(::pread(fd, on_disk.data(), on_disk.size(), static_cast<off_t>(offset)), 16);
  ::close(fd);
  EXPECT_EQ(hex(on_disk), hex(*original)) << path << " at offset " << offset;

  // A child started with fork+exec (through /bin/sh) sees the unhooked libc.
  char self[4096] = {};
  ASSERT_GT(::readlink("/proc/self/exe", self, sizeof self - 1), 0);
  const std::string command = std::string("PUNCH_HOOK_TEST_PRINT_PUTS=1 '") + self + "'";
  FILE* child = ::popen(command.c_str(), "r");
  ASSERT_NE(child, nullptr);
  char line[128] = {};
  const bool got = std::fgets(line, sizeof line, child) != nullptr;
  EXPECT_EQ(::pclose(child), 0);
  ASSERT_TRUE(got);
  EXPECT_EQ(std::string(line), hex(*original) + "\n");

  ASSERT_TRUE(hook->remove());
  auto after = runtime::safe_read_exact(puts_address, 16);
  ASSERT_TRUE(after);
  EXPECT_EQ(hex(*after), hex(*original));
  EXPECT_FALSE(g_child_mode);
}

// glibc's strlen is an IFUNC: by name we get the implementation the resolver
// picked for this CPU (e.g. __strlen_avx2). That implementation has no dynamic
// symbol, so its extent is unknown: refused cleanly by default, hooked when the
// caller vouches for an extent.
std::atomic<std::size_t (*)(const char*)> g_original_strlen{nullptr};
std::atomic<int> g_strlen_calls{0};
std::size_t counting_strlen(const char* s) {
  g_strlen_calls.fetch_add(1);
  return g_original_strlen.load()(s);
}

TEST(Hook, IfuncStrlenIsRefusedWithoutAnExtentAndHookedWithOne) {
  auto address = resolve_symbol({"strlen", "", "libc.so.6"});
  ASSERT_TRUE(address) << address.error().describe();
  test::MemorySnapshot before(*address, 32);
  HookOptions options;
  options.enabled = false;
  auto refused = Hook::install(*address, reinterpret_cast<void*>(counting_strlen), options);
  if (!refused) {  // No symbol covers the implementation (the usual case on distributions).
    EXPECT_EQ(refused.error().code, ErrorCode::kUnprovable);
    EXPECT_NE(refused.error().message.find(at(*address)), std::string::npos) << refused.error().message;
    EXPECT_EQ(before.differences(), "");
  } else {
    ASSERT_TRUE(refused->remove());
  }

  // The caller vouches that no branch from outside the first 64 bytes lands in the stolen bytes.
  const auto start = reinterpret_cast<std::uintptr_t>(*address);
  options.function = disasm::FunctionExtent{start, start + 64, disasm::FunctionExtent::Source::kCaller};
  options.transaction.allow_unprovable = true;
  auto hook = Hook::install(*address, reinterpret_cast<void*>(counting_strlen), options);
  ASSERT_TRUE(hook) << hook.error().describe();
  g_original_strlen = hook->original<std::size_t (*)(const char*)>();
  ASSERT_TRUE(hook->enable());
  g_strlen_calls = 0;
  std::size_t (*volatile call_strlen)(const char*) = reinterpret_cast<std::size_t (*)(const char*)>(*address);
  const std::string text = "the quick brown fox jumps over the lazy dog";
  for (std::size_t n = 0; n <= text.size(); ++n) EXPECT_EQ(call_strlen(text.c_str() + n), text.size() - n);
  EXPECT_GE(g_strlen_calls.load(), static_cast<int>(text.size() + 1));  // Other code calls strlen too.
  ASSERT_TRUE(hook->remove());
  EXPECT_EQ(before.differences(), "");
}

// Installs a disabled hook on JIT code at `f`, whose extent is `size` bytes.
Result<Hook> install_disabled_in_jit_code(std::uintptr_t f, std::size_t size, bool allow_unprovable) {
  HookOptions options;
  options.enabled = false;
  options.function = disasm::FunctionExtent{f, f + size, disasm::FunctionExtent::Source::kCaller};
  options.transaction.allow_unprovable = allow_unprovable;
  return Hook::install(reinterpret_cast<void*>(f), reinterpret_cast<void*>(plus_1000), options);
}

// JIT code `jmp rsi; case0: mov eax, 7; ret`: a 5-byte jump steals both
// instructions, and the indirect jump, copied into the trampoline, may land on
// the case in the middle of the stolen bytes (a jump table's first case
// follows its jmp). Unprovable unless allowed; until the one branch scan the
// planner dropped indirect jumps inside the stolen bytes and hooked this.
TEST(Hook, IndirectJumpAmongSeveralStolenInstructionsIsUnprovableUnlessAllowed) {
  namespace x86 = asmjit::x86;
  const std::uintptr_t f = test::emit([](x86::Assembler& a) {
    a.jmp(x86::rsi);
    a.mov(x86::eax, 7);
    a.ret();
  });
  ASSERT_NE(f, 0u);
  test::MemorySnapshot before(f, 8);
  auto refused = install_disabled_in_jit_code(f, 8, false);
  ASSERT_FALSE(refused) << "hooked over an indirect jump among the stolen bytes";
  EXPECT_EQ(refused.error().code, ErrorCode::kUnprovable) << refused.error().describe();
  EXPECT_NE(refused.error().message.find("indirect jump"), std::string::npos) << refused.error().describe();
  EXPECT_EQ(before.differences(), "");

  auto hook = install_disabled_in_jit_code(f, 8, true);
  ASSERT_TRUE(hook) << hook.error().describe();
  ASSERT_TRUE(hook->remove());
  EXPECT_EQ(before.differences(), "");
}

// A stolen run that is one indirect jump (`jmp [rsi+disp32]`, 6 bytes) has no
// boundary inside it to land on: hooked without allow_unprovable.
TEST(Hook, AnIndirectJumpThatIsTheWholeStolenRunIsHooked) {
  namespace x86 = asmjit::x86;
  const std::uintptr_t f = test::emit([](x86::Assembler& a) {
    a.jmp(x86::qword_ptr(x86::rsi, 0x1000));
    a.ret();
  });
  ASSERT_NE(f, 0u);
  test::MemorySnapshot before(f, 7);
  auto hook = install_disabled_in_jit_code(f, 7, false);
  ASSERT_TRUE(hook) << hook.error().describe();
  EXPECT_EQ(hook->info().stolen, 6u);
  ASSERT_TRUE(hook->remove());
  EXPECT_EQ(before.differences(), "");
}

// Every write of an install failing in turn: each failed install leaves the
// target's bytes exactly as they were, and a later install works.
TEST(Hook, FailedInstallLeavesMemoryAsItWas) {
  // The process-wide writer probes with real writes on first use: pick it before faults are armed.
  ASSERT_TRUE(runtime::CodeHeap::global());
  test::MemorySnapshot before(reinterpret_cast<void*>(hook_target_square), 32);
  int failed = 0;
  for (std::uint64_t nth = 1; nth <= 6; ++nth) {
    SCOPED_TRACE("write #" + std::to_string(nth) + " fails");
    runtime::testing::inject_fault(runtime::testing::FaultPoint::kWrite, nth, runtime::testing::FaultKind::kEio);
    auto hook = hook_with(hook_target_square, plus_1000);
    runtime::testing::clear_faults();
    if (!hook) {
      ++failed;
      EXPECT_EQ(before.differences(), "") << hook.error().describe();
      EXPECT_EQ(call(hook_target_square, 5), 24);
      continue;
    }
    EXPECT_EQ(call(hook_target_square, 5), 1024);
    ASSERT_TRUE(hook->remove());
    EXPECT_EQ(before.differences(), "");
  }
  EXPECT_GT(failed, 0);  // At least the first write of an install was made to fail.
  auto hook = hook_with(hook_target_square, plus_1000);
  ASSERT_TRUE(hook) << hook.error().describe();
  EXPECT_EQ(call(hook_target_square, 5), 1024);
  ASSERT_TRUE(hook->remove());
  EXPECT_EQ(before.differences(), "");
}

TEST(Hook, RetiredCodeIsReleasedWhenNoThreadRunsIt) {
  HookOptions disabled;
  disabled.enabled = false;
  auto inner =
      Hook::install(reinterpret_cast<void*>(hook_target_square), reinterpret_cast<void*>(inner_plus_1), disabled);
  ASSERT_TRUE(inner) << inner.error().describe();
  auto outer =
      Hook::install(reinterpret_cast<void*>(hook_target_square), reinterpret_cast<void*>(outer_times_2), disabled);
  ASSERT_TRUE(outer) << outer.error().describe();
  ASSERT_TRUE(outer->remove());  // Retires its link stub.
  ASSERT_TRUE(inner->remove());  // The chain is unused: its trampoline goes at the next release.
  auto released = release_retired_hook_code();
  ASSERT_TRUE(released) << released.error().describe();
  EXPECT_GE(*released, 2u);
  auto again = release_retired_hook_code();
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, 0u);
  // The target hooks again from scratch afterwards.
  auto hook = hook_with(hook_target_square, plus_1000);
  ASSERT_TRUE(hook) << hook.error().describe();
  EXPECT_EQ(call(hook_target_square, 2), 1003);
  ASSERT_TRUE(hook->remove());
}

// The corpus of tricky entries hooked for real: each case hooks and behaves
// exactly like the original through detour and trampoline, and again after
// removal with its bytes identical, or is refused with memory untouched.
TEST(Hook, CorpusHookedForReal) {
  for (const auto& c : test::disasm_corpus()) {
    SCOPED_TRACE(c.name);
    const std::string name = c.name;
    const bool stolen_run_differs = name == "call_mid" || name == "syscall";
    const bool refuse =
        c.branch_into_run || c.indirect_jump || (!c.relocatable && !stolen_run_differs) || name == "tiny_ret";
    test::MemorySnapshot before(reinterpret_cast<void*>(c.function), 32);
    std::vector<long> original_results;
    for (long x = 1; c.callable && x <= 100; ++x) original_results.push_back(call(c.function, x));
    auto hook = hook_with(c.function, pass_through);
    if (refuse) {
      ASSERT_FALSE(hook) << c.name << " should be refused";
      EXPECT_EQ(before.differences(), "");
      continue;
    }
    ASSERT_TRUE(hook) << hook.error().describe();
    g_calls = 0;
    for (long x = 1; c.callable && x <= 100; ++x)
      ASSERT_EQ(call(c.function, x), original_results[x - 1]) << "hooked, x = " << x;
    EXPECT_EQ(g_calls.load(), c.callable ? 100 : 0);
    ASSERT_TRUE(hook->remove());
    EXPECT_EQ(before.differences(), "");
    for (long x = 1; c.callable && x <= 100; ++x)
      ASSERT_EQ(call(c.function, x), original_results[x - 1]) << "removed, x = " << x;
  }
}

TEST(Hook, HooksInstallAndRemoveWhileOtherThreadsCallTheTarget) {
  test::MemorySnapshot before(reinterpret_cast<void*>(hook_target_prologue), 32);
  std::atomic<bool> stop{false};
  std::atomic<long> wrong{0}, hooked_calls{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 2; ++t)
    callers.emplace_back([&] {
      for (long x = 0; !stop.load(std::memory_order_relaxed); x = (x + 1) % 1000) {
        const long r = call(hook_target_prologue, x);
        if (r == 3 * x + 1007) {
          hooked_calls.fetch_add(1, std::memory_order_relaxed);
        } else if (r != 3 * x + 7) {
          wrong.fetch_add(1, std::memory_order_relaxed);
        }
      }
    });
  constexpr int kCycles = 1000;
  for (int i = 0; i < kCycles; ++i) {
    auto hook = hook_with(hook_target_prologue, plus_1000);
    ASSERT_TRUE(hook) << "cycle " << i << ": " << hook.error().describe();
    ASSERT_TRUE(hook->remove()) << "cycle " << i;
  }
  stop = true;
  for (auto& t : callers) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(before.differences(), "");
  auto released = release_retired_hook_code();
  EXPECT_TRUE(released) << released.error().describe();
}

template <int I>
long chained_identity(long x);
std::atomic<Fn> g_chain_original[4];
template <int I>
long chained_identity(long x) {
  return g_chain_original[I].load()(x);
}

TEST(Hook, ApiIsThreadSafe) {
  test::MemorySnapshot before(reinterpret_cast<void*>(hook_target_square), 32);
  constexpr Fn detours[] = {chained_identity<0>, chained_identity<1>, chained_identity<2>, chained_identity<3>};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        HookOptions disabled;
        disabled.enabled = false;
        auto hook =
            Hook::install(reinterpret_cast<void*>(hook_target_square), reinterpret_cast<void*>(detours[t]), disabled);
        if (!hook) {
          failures++;
          continue;
        }
        g_chain_original[t] = hook->original<Fn>();
        if (!hook->enable() || call(hook_target_square, 6) != 35 || !hook->remove()) failures++;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(before.differences(), "");
}

TEST(Hook, WorksUnderMdweInAChild) {
  auto outcome = test::run_in_child([] {
    if (prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0L, 0L, 0L) != 0) {
      std::printf("PR_SET_MDWE failed\n");
      return 2;
    }
    auto hook = hook_with(hook_target_square, plus_1000);
    if (!hook) {
      std::printf("install: %s\n", hook.error().describe().c_str());
      return 3;
    }
    if (call(hook_target_square, 3) != 1008 || call(hook->original<Fn>(), 3) != 8) return 4;
    if (auto s = hook->remove(); !s) {
      std::printf("remove: %s\n", s.error().describe().c_str());
      return 5;
    }
    return call(hook_target_square, 3) == 8 ? 0 : 6;
  });
  EXPECT_EQ(outcome.exit_code, 0) << outcome.describe();
}

}  // namespace
}  // namespace punch::patcher
