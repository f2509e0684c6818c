// Branches into replaced bytes from anywhere in the loaded object, not only
// from the function being changed: glibc's __mempcpy_* ends in `jmp
// memmove+3`, and a compiler or an assembly writer may tail-jump into any
// neighbour's body. Each refusal names the jump and where it lands, and
// leaves memory exactly as it was.
#include <gtest/gtest.h>

#include <dlfcn.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include <punch/disasm/instruction.hpp>
#include <punch/patcher/hook.hpp>
#include <punch/patcher/transaction.hpp>
#include <punch/runtime/safe_read.hpp>

#include "branch_index.hpp"
#include "child_process.hpp"
#include "memory_snapshot.hpp"

namespace punch::patcher {
namespace {

using IntFn = int (*)(int);

int call(IntFn f, int x) {
  IntFn volatile p = f;
  return p(x);
}

std::atomic<IntFn> g_original{nullptr};
int plus_thousand(int x) { return g_original.load()(x) + 1000; }

// Installs a hook of `target` that adds 1000, publishing the original before any call reaches it.
Result<Hook> hook_plus_thousand(IntFn target, HookOptions options = {}) {
  const bool enable = options.enabled;
  options.enabled = false;
  auto hook = Hook::install(reinterpret_cast<void*>(target), reinterpret_cast<void*>(plus_thousand), options);
  if (!hook) return hook;
  g_original = hook->original<IntFn>();
  if (enable)
    if (auto s = hook->enable(); !s) return tl::unexpected(s.error());
  return hook;
}

std::string address_of(IntFn f, std::size_t offset = 0) { return at(reinterpret_cast<std::uintptr_t>(f) + offset); }

// The test library (tail_jump_lib.c), as built by one compiler.
class TailJumpLib {
 public:
  explicit TailJumpLib(const std::string& path) : handle_(::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL)) {}
  ~TailJumpLib() {
    if (handle_) ::dlclose(handle_);
  }
  TailJumpLib(const TailJumpLib&) = delete;
  TailJumpLib& operator=(const TailJumpLib&) = delete;

  bool loaded() const { return handle_ != nullptr; }
  IntFn fn(const char* name) const { return reinterpret_cast<IntFn>(::dlsym(handle_, name)); }

 private:
  void* handle_;
};

std::vector<std::string> tail_jump_libs() {
  std::vector<std::string> paths;
  std::stringstream all(PUNCH_TAIL_JUMP_LIBS);
  for (std::string path; std::getline(all, path, ':');)
    if (!path.empty()) paths.push_back(path);
  return paths;
}

class TailJump : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { ASSERT_TRUE(lib_.loaded()) << GetParam() << ": " << ::dlerror(); }
  TailJumpLib lib_{GetParam()};
};

INSTANTIATE_TEST_SUITE_P(Compilers, TailJump, ::testing::ValuesIn(tail_jump_libs()), [](const auto& case_info) {
  const std::string file = case_info.param.substr(case_info.param.rfind('/') + 1);  // libpunch_tail_jump_<compiler>.so
  return file.find("clang") != std::string::npos ? std::string("clang") : std::string("gcc");
});

// A hook whose stolen bytes another function jumps into is refused, naming
// that jump and its target; the function and its neighbour still work, and
// not a byte changed. Without the object-wide index the hook was installed
// and the neighbour then jumped into the middle of the hook's jmp.
TEST_P(TailJump, HookOverBytesANeighbourJumpsIntoIsRefusedNamingTheJump) {
  struct Case {
    const char* victim;
    const char* neighbour;
    std::size_t jump_offset;    // Of the neighbour's jmp.
    std::size_t target_offset;  // Where it lands in the victim.
  };
  for (const Case& c : {Case{"tj_victim", "tj_neighbour", 3, 3}, Case{"tj_victim_cet", "tj_neighbour_cet", 7, 7}}) {
    SCOPED_TRACE(c.victim);
    const IntFn victim = lib_.fn(c.victim), neighbour = lib_.fn(c.neighbour);
    ASSERT_NE(victim, nullptr);
    ASSERT_NE(neighbour, nullptr);
    test::MemorySnapshot before(reinterpret_cast<void*>(victim), 16);
    auto hook = hook_plus_thousand(victim);
    ASSERT_FALSE(hook) << "hooked although " << c.neighbour << " jumps into the stolen bytes";
    EXPECT_EQ(hook.error().code, ErrorCode::kBranchInto) << hook.error().describe();
    const std::string& message = hook.error().message;
    EXPECT_NE(message.find(address_of(neighbour, c.jump_offset) + " ("), std::string::npos) << message;
    EXPECT_NE(message.find("lands at " + address_of(victim, c.target_offset)), std::string::npos) << message;
    EXPECT_NE(message.find(GetParam()), std::string::npos) << message;  // The object is named.
    EXPECT_EQ(before.differences(), "");
    EXPECT_EQ(call(victim, 5), 8);
    EXPECT_EQ(call(neighbour, 5), 12);
  }
}

// A jump landing past the 5-byte jump's stolen bytes is no obstacle (no false
// refusal); the 16-byte absolute entry would cover its target and is refused.
TEST_P(TailJump, OnlyTheEntryFormWhoseBytesHoldTheTargetIsRefused) {
  const IntFn victim = lib_.fn("tj_victim_deep"), neighbour = lib_.fn("tj_neighbour_deep");
  ASSERT_NE(victim, nullptr);
  ASSERT_NE(neighbour, nullptr);
  {
    auto hook = hook_plus_thousand(victim);
    ASSERT_TRUE(hook) << hook.error().describe();
    EXPECT_EQ(call(victim, 5), 1015);
    EXPECT_EQ(call(neighbour, 5), 14);  // Lands at +9, past the 6 stolen bytes.
    ASSERT_TRUE(hook->remove());
  }
  test::MemorySnapshot before(reinterpret_cast<void*>(victim), 24);
  HookOptions absolute;
  absolute.force_absolute_entry = true;
  auto hook = hook_plus_thousand(victim, absolute);
  ASSERT_FALSE(hook) << "a 16-byte entry would cover the neighbour's jump target";
  EXPECT_EQ(hook.error().code, ErrorCode::kBranchInto) << hook.error().describe();
  EXPECT_NE(hook.error().message.find(address_of(neighbour, 3) + " ("), std::string::npos) << hook.error().message;
  EXPECT_NE(hook.error().message.find("lands at " + address_of(victim, 9)), std::string::npos) << hook.error().message;
  EXPECT_EQ(before.differences(), "");
  EXPECT_EQ(call(victim, 5), 15);
  EXPECT_EQ(call(neighbour, 5), 14);
}

// Data in the code that decodes as a branch into the middle of an
// instruction (no real code lands in a ModRM byte) is not a known branch:
// refused as unprovable, naming it, and hooked with allow_unprovable.
TEST_P(TailJump, DataDecodedAsABranchIntoAnInstructionIsUnprovable) {
  const IntFn victim = lib_.fn("tj_data_victim"), holder = lib_.fn("tj_data_holder");
  ASSERT_NE(victim, nullptr);
  ASSERT_NE(holder, nullptr);
  test::MemorySnapshot before(reinterpret_cast<void*>(victim), 16);
  auto refused = hook_plus_thousand(victim);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kUnprovable) << refused.error().describe();
  EXPECT_NE(refused.error().message.find(address_of(holder, 3) + " ("), std::string::npos) << refused.error().message;
  EXPECT_NE(refused.error().message.find("lands at " + address_of(victim, 2)), std::string::npos)
      << refused.error().message;
  EXPECT_NE(refused.error().message.find("allow_unprovable"), std::string::npos) << refused.error().message;
  EXPECT_EQ(before.differences(), "");

  HookOptions accept;
  accept.transaction.allow_unprovable = true;
  auto hook = hook_plus_thousand(victim, accept);
  ASSERT_TRUE(hook) << hook.error().describe();
  EXPECT_EQ(call(victim, 5), 1005);
  ASSERT_TRUE(hook->remove());
  EXPECT_EQ(before.differences(), "");
}

// Ordinary compiled code of the same object hooks: the index refuses only
// what some branch reaches.
TEST_P(TailJump, CompiledFunctionOfTheSameObjectHooks) {
  const IntFn plain = lib_.fn("tj_plain");
  ASSERT_NE(plain, nullptr);
  auto hook = hook_plus_thousand(plain);
  ASSERT_TRUE(hook) << hook.error().describe();
  EXPECT_EQ(call(plain, 5), 1016);
  ASSERT_TRUE(hook->remove());
  EXPECT_EQ(call(plain, 5), 16);
}

// A live transaction over the bytes a neighbour jumps into is refused too,
// even when the caller vouches for the function's extent and accepts what
// cannot be proven: the jump is known, not unprovable.
TEST_P(TailJump, TransactionOverAJumpTargetIsRefusedWithAVouchedExtent) {
  const IntFn victim = lib_.fn("tj_victim"), neighbour = lib_.fn("tj_neighbour");
  ASSERT_NE(victim, nullptr);
  const auto start = reinterpret_cast<std::uintptr_t>(victim);
  auto now = runtime::safe_read_exact(start, 6);
  ASSERT_TRUE(now) << now.error().describe();
  test::MemorySnapshot before(start, 16);
  TransactionOptions options;
  options.allow_unprovable = true;
  Transaction tx(options);
  const std::vector<std::uint8_t> add_five = {0x8d, 0x47, 0x01, 0x83, 0xc0, 0x05};  // lea eax, [rdi+1]; add eax, 5
  ASSERT_TRUE(tx.add(
      {start, *now, add_five, disasm::FunctionExtent{start, start + 7, disasm::FunctionExtent::Source::kCaller}}));
  auto committed = tx.commit();
  ASSERT_FALSE(committed);
  EXPECT_EQ(committed.error().code, ErrorCode::kBranchInto) << committed.error().describe();
  EXPECT_NE(committed.error().message.find("site #0 at " + at(start)), std::string::npos) << committed.error().message;
  EXPECT_NE(committed.error().message.find(address_of(neighbour, 3) + " ("), std::string::npos)
      << committed.error().message;
  EXPECT_NE(committed.error().message.find("lands at " + at(start + 3)), std::string::npos)
      << committed.error().message;
  EXPECT_EQ(before.differences(), "");
  EXPECT_EQ(call(neighbour, 5), 12);
}

// An unloaded object's index is dropped (whatever is mapped there next is
// other code), and a reloaded object is indexed afresh.
TEST(BranchIndex, UnloadingAnObjectDropsItsIndex) {
  const auto paths = tail_jump_libs();
  ASSERT_FALSE(paths.empty());
  for (int round = 0; round < 2; ++round) {
    TailJumpLib lib(paths.front());
    ASSERT_TRUE(lib.loaded()) << ::dlerror();
    const IntFn victim = lib.fn("tj_victim"), neighbour = lib.fn("tj_neighbour");
    auto hook = hook_plus_thousand(victim);
    ASSERT_FALSE(hook);
    EXPECT_NE(hook.error().message.find(address_of(neighbour, 3) + " ("), std::string::npos) << hook.error().message;
  }
  // The library is unloaded now: the next question, about libc, finds only libc indexed.
  const auto puts_at = reinterpret_cast<std::uintptr_t>(&::puts);
  auto none = detail::find_branches_into(puts_at, puts_at + 1);
  ASSERT_TRUE(none) << none.error().describe();
  EXPECT_TRUE(none->empty());
  EXPECT_EQ(detail::branch_index_stats().objects, 1u);
}

// The libc functions people hook are not refused by the object-wide check
// (on this machine's glibc: see README, "Hooks"). Left out: IFUNCs (memcpy,
// strlen: no symbol gives their implementation's extent) and the functions
// the per-function check already refuses for an indirect jump
// (pthread_mutex_trylock, dlopen, dlsym). Planned by a disabled hook, then
// checked by a transaction over the same bytes (site validation), changing nothing.
TEST(BranchIndex, CommonlyHookedLibcFunctionsAreNotRefused) {
  const char* const names[] = {"malloc",
                               "free",
                               "calloc",
                               "realloc",
                               "posix_memalign",
                               "write",
                               "read",
                               "pread64",
                               "pwrite64",
                               "open",
                               "openat",
                               "close",
                               "execve",
                               "execvp",
                               "posix_spawn",
                               "fork",
                               "pthread_create",
                               "pthread_join",
                               "pthread_mutex_lock",
                               "pthread_mutex_unlock",
                               "pthread_cond_wait",
                               "pthread_cond_signal",
                               "connect",
                               "accept",
                               "socket",
                               "send",
                               "recv",
                               "sendto",
                               "recvfrom",
                               "sendmsg",
                               "recvmsg",
                               "poll",
                               "epoll_wait",
                               "select",
                               "nanosleep",
                               "usleep",
                               "mmap",
                               "munmap",
                               "mprotect",
                               "fopen",
                               "fclose",
                               "fread",
                               "fwrite",
                               "puts",
                               "printf",
                               "fprintf",
                               "getaddrinfo",
                               "exit",
                               "_exit",
                               "abort",
                               "sigaction",
                               "kill",
                               "getenv",
                               "setenv",
                               "clock_gettime",
                               "stat",
                               "fstat",
                               "unlink",
                               "rename",
                               "mkdir",
                               "opendir",
                               "readdir",
                               "dup2",
                               "pipe",
                               "ioctl",
                               "fcntl",
                               "syslog"};
  for (const char* name : names) {
    SCOPED_TRACE(name);
    auto address = resolve_symbol({name, "", "libc.so.6"});
    ASSERT_TRUE(address) << address.error().describe();
    HookOptions disabled;
    disabled.enabled = false;
    auto hook = Hook::install(*address, reinterpret_cast<void*>(plus_thousand), disabled);
    ASSERT_TRUE(hook) << hook.error().describe();
    const HookInfo info = hook->info();
    auto bytes = runtime::safe_read_exact(info.entry, info.stolen);
    ASSERT_TRUE(bytes) << bytes.error().describe();
    Transaction same;
    ASSERT_TRUE(same.add({info.entry, *bytes, *bytes, {}}));
    auto valid = same.validate();
    EXPECT_TRUE(valid) << valid.error().describe();
    ASSERT_TRUE(hook->remove());
  }
}

// ---- glibc without AVX: hooking memcpy must not break mempcpy ----

constexpr const char* kSse2Tunables = "glibc.cpu.hwcaps=-AVX512F,-AVX_Fast_Unaligned_Load,-SSSE3,-ERMS";

std::atomic<void* (*)(void*, const void*, std::size_t)> g_original_memcpy{nullptr};
std::atomic<long> g_memcpy_calls{0};
void* counting_memcpy(void* d, const void* s, std::size_t n) {
  g_memcpy_calls.fetch_add(1, std::memory_order_relaxed);
  return g_original_memcpy.load()(d, s, n);
}

// Calls mempcpy (through a pointer: no builtin) and checks what it did.
bool mempcpy_works() {
  void* (*volatile copy)(void*, const void*, std::size_t) = &::mempcpy;
  char from[40] = "punch: mempcpy after a memcpy hook", to[40] = {};
  return copy(to, from, sizeof from) == to + sizeof from && std::memcmp(to, from, sizeof from) == 0;
}

// In a fresh process started with the SSE2-only tunables (they are read when
// the process starts). glibc picks __memmove_sse2_unaligned for memcpy and
// memmove, and __mempcpy_sse2_unaligned ends in a jmp to its third byte.
int glibc_sse2_child() {
  auto mempcpy_at = resolve_symbol({"mempcpy", "", "libc.so.6"});
  CHILD_OK(mempcpy_at);
  // mempcpy's jump into another function: the first direct jmp in its first bytes.
  const auto start = reinterpret_cast<std::uintptr_t>(*mempcpy_at);
  auto head = runtime::safe_read_exact(start, 32);
  CHILD_OK(head);
  std::uintptr_t jump = 0, lands = 0;
  for (std::uintptr_t a = start; a < start + 16 && !jump;) {
    auto insn = disasm::decode({start, *head}, a);
    if (!insn) break;
    if (insn->flow == disasm::Flow::kJump) jump = a, lands = insn->branch_target;
    a = insn->end();
  }
  for (const char* name : {"memcpy", "memmove"}) {
    auto target_at = resolve_symbol({name, "", "libc.so.6"});
    CHILD_OK(target_at);
    const auto target = reinterpret_cast<std::uintptr_t>(*target_at);
    // A jump strictly inside the first 5 bytes is inside whatever a hook steals.
    const bool jumps_in = jump != 0 && lands > target && lands < target + 5;
    if (!jumps_in) {
      std::printf("this glibc's mempcpy does not jump into %s's first bytes (%s)\n", name, at(lands).c_str());
      return test::kChildSkip;
    }
    test::MemorySnapshot before(target, 32);
    HookOptions disabled;  // Default options but for publishing the original first.
    disabled.enabled = false;
    auto hook = Hook::install(*target_at, reinterpret_cast<void*>(counting_memcpy), disabled);
    CHILD_CHECK(!hook, "%s was hooked although mempcpy jumps to %s", name, at(lands).c_str());
    CHILD_CHECK(hook.error().code == ErrorCode::kBranchInto, "%s", hook.error().describe().c_str());
    CHILD_CHECK(hook.error().message.find(at(jump) + " (") != std::string::npos, "%s", hook.error().message.c_str());
    CHILD_CHECK(hook.error().message.find("lands at " + at(lands)) != std::string::npos, "%s",
                hook.error().message.c_str());
    CHILD_CHECK(before.differences().empty(), "%s", before.differences().c_str());
    CHILD_CHECK(mempcpy_works());
  }
  // Default options through and through (the reproduction): refused, mempcpy still works.
  auto hook = Hook::install({"memcpy", "", "libc.so.6"}, reinterpret_cast<void*>(counting_memcpy));
  CHILD_CHECK(!hook);
  CHILD_CHECK(mempcpy_works());
  std::printf("refused: %s\n", hook.error().describe().c_str());
  return 0;
}

const bool g_child_mode = [] {
  const char* mode = std::getenv("PUNCH_BRANCH_INDEX_CHILD");
  if (mode == nullptr || std::string(mode) != "glibc-sse2") return false;
  const int code = glibc_sse2_child();
  std::fflush(stdout);
  _exit(code);
}();

TEST(BranchIndexGlibc, HookingMemcpyWithoutAvxIsRefusedAndMempcpyKeepsWorking) {
  EXPECT_FALSE(g_child_mode);
  char self[4096] = {};
  ASSERT_GT(::readlink("/proc/self/exe", self, sizeof self - 1), 0);
  const auto outcome = test::run_in_child([&] {
    ::setenv("PUNCH_BRANCH_INDEX_CHILD", "glibc-sse2", 1);
    ::setenv("GLIBC_TUNABLES", kSse2Tunables, 1);
    ::execl(self, self, static_cast<char*>(nullptr));
    std::perror("execl");
    return 127;
  });
  EXPECT_CHILD_OK(outcome);
}

}  // namespace
}  // namespace punch::patcher
