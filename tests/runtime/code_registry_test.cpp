// The code registry: Jit names its functions, release forgets them before the
// memory is reused, and lookups work concurrently and from a signal handler.
#include <punch/runtime/code_registry.hpp>
#include <punch/runtime/jit.hpp>

#include <asmjit/x86.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>

#include "own_heap_fixture.hpp"

namespace punch::runtime {
namespace {

using namespace asmjit;

// int f() { return k; } padded with `nops` nops.
void emit_const(CodeHolder& code, int k, int nops = 0) {
  code.init(Jit::environment());
  x86::Assembler a(&code);
  for (int i = 0; i < nops; ++i) a.nop();
  a.mov(x86::eax, k);
  a.ret();
}

std::uintptr_t addr(void* p) { return reinterpret_cast<std::uintptr_t>(p); }

std::string name_at(std::uintptr_t address) {
  CodeInfo info;
  return find_code(address, info) ? std::string(info.name) : std::string("<none>");
}

class CodeRegistryTest : public test::OwnHeapTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(make_heap(64 * 1024));
    jit = std::make_unique<Jit>(*heap);
  }
  std::unique_ptr<Jit> jit;
};

TEST_F(CodeRegistryTest, NamedFunctionIsFoundAnywhereInsideItWithItsNameSizeAndKind) {
  CodeHolder code;
  emit_const(code, 7, 10);
  auto fn = jit->add_as<int (*)()>(code, {"answer_seven"});
  ASSERT_TRUE(fn) << fn.error().describe();
  EXPECT_EQ((*fn)(), 7);
  const auto start = reinterpret_cast<std::uintptr_t>(*fn);
  CodeInfo info;
  ASSERT_TRUE(find_code(start + 3, info));
  EXPECT_EQ(info.start, start);
  EXPECT_EQ(info.size, code.codeSize());
  EXPECT_EQ(info.kind, CodeKind::kJit);
  EXPECT_STREQ(info.name, "answer_seven");
  EXPECT_FALSE(find_code(start + info.size, info)) << "one past the end is not the function";
  EXPECT_FALSE(find_code(start - 1, info));
  ASSERT_TRUE(jit->release(reinterpret_cast<void*>(*fn)));
}

TEST_F(CodeRegistryTest, UnnamedFunctionGetsItsAddressAsName) {
  CodeHolder code;
  emit_const(code, 1);
  auto fn = jit->add(code);
  ASSERT_TRUE(fn);
  char expected[32];
  std::snprintf(expected, sizeof expected, "jit:0x%lx", static_cast<unsigned long>(addr(*fn)));
  EXPECT_EQ(name_at(addr(*fn)), expected);
  ASSERT_TRUE(jit->release(*fn));
}

TEST_F(CodeRegistryTest, BatchNamesEachFunctionAndRefusesInfosOfAnotherLength) {
  CodeHolder a, b, c;
  emit_const(a, 1);
  emit_const(b, 2);
  emit_const(c, 3);
  CodeHolder* codes[] = {&a, &b, &c};
  const JitFunctionInfo two[] = {{"one"}, {"two"}};
  const HeapStats before = heap->stats();
  auto refused = jit->add_batch(codes, two);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(refused.error().describe().find("2 infos for 3 functions"), std::string::npos)
      << refused.error().describe();
  EXPECT_EQ(heap->stats().used, before.used) << "a refused batch allocates nothing";

  const JitFunctionInfo three[] = {{"one"}, {""}, {"three"}};
  auto fns = jit->add_batch(codes, three);
  ASSERT_TRUE(fns) << fns.error().describe();
  EXPECT_EQ(name_at(addr((*fns)[0])), "one");
  EXPECT_EQ(name_at(addr((*fns)[1])).rfind("jit:0x", 0), 0u) << "an empty name is generated";
  EXPECT_EQ(name_at(addr((*fns)[2])), "three");
  ASSERT_TRUE(jit->release_batch(*fns));
  for (void* fn : *fns) EXPECT_EQ(name_at(addr(fn)), "<none>");
}

TEST_F(CodeRegistryTest, ReleaseForgetsTheNameBeforeTheMemoryIsReused) {
  CodeHolder first;
  emit_const(first, 1);
  auto old_fn = jit->add(first, {"old_function"});
  ASSERT_TRUE(old_fn);
  ASSERT_TRUE(jit->release(*old_fn));
  EXPECT_EQ(name_at(addr(*old_fn)), "<none>");
  // The heap hands the same space out again: the registry names the new code only.
  CodeHolder second;
  emit_const(second, 2);
  auto new_fn = jit->add(second, {"new_function"});
  ASSERT_TRUE(new_fn);
  ASSERT_EQ(*new_fn, *old_fn) << "test assumes the heap reuses the freed block";
  EXPECT_EQ(name_at(addr(*new_fn)), "new_function");
  ASSERT_TRUE(jit->release(*new_fn));
}

TEST_F(CodeRegistryTest, RefusedReleaseKeepsTheName) {
  CodeHolder code;
  emit_const(code, 1);
  auto fn = jit->add(code, {"kept"});
  ASSERT_TRUE(fn);
  void* twice[] = {*fn, *fn};
  EXPECT_FALSE(jit->release_batch(twice));
  EXPECT_EQ(name_at(addr(*fn)), "kept") << "nothing was freed, so nothing is forgotten";
  void* inside = static_cast<char*>(*fn) + 1;
  EXPECT_FALSE(jit->release(inside));
  EXPECT_EQ(name_at(addr(*fn)), "kept");
  ASSERT_TRUE(jit->release(*fn));
}

TEST_F(CodeRegistryTest, DestroyedHeapLeavesNoNames) {
  CodeHolder code;
  emit_const(code, 1);
  auto fn = jit->add(code, {"in_a_heap_that_goes_away"});
  ASSERT_TRUE(fn);
  jit.reset();
  heap.reset();
  EXPECT_EQ(name_at(addr(*fn)), "<none>");
}

// Static bytes standing in for code written outside Jit.
alignas(16) const unsigned char kOutsideCode[256] = {0xC3};

TEST(CodeRegistry, RegisterCodeReplacesOverlapsTruncatesLongNamesAndSnapshots) {
  const auto base = reinterpret_cast<std::uintptr_t>(kOutsideCode);
  register_code(base, 64, "first_half", CodeKind::kTrampoline);
  register_code(base + 128, 64, std::string(300, 'x'), CodeKind::kRelay);
  CodeInfo info;
  ASSERT_TRUE(find_code(base + 10, info));
  EXPECT_EQ(info.kind, CodeKind::kTrampoline);
  ASSERT_TRUE(find_code(base + 130, info));
  EXPECT_EQ(std::strlen(info.name), CodeInfo::kNameCapacity - 1);

  // New code over part of an old entry replaces it: no address has two names.
  register_code(base + 32, 64, "", CodeKind::kOther);
  EXPECT_EQ(name_at(base + 10), "<none>");
  EXPECT_EQ(name_at(base + 40).rfind("code:0x", 0), 0u);

  auto all = registered_code();
  int mine = 0;
  for (const CodeInfo& c : all) mine += c.start >= base && c.start < base + sizeof kOutsideCode;
  EXPECT_EQ(mine, 2);
  unregister_code(base, sizeof kOutsideCode);
  EXPECT_EQ(name_at(base + 40), "<none>");
  EXPECT_EQ(name_at(base + 130), "<none>");
}

TEST(CodeRegistry, EntriesLargerThanAShardRegionAreFoundEverywhereAndRemovedWhole) {
  static std::vector<unsigned char> big(300 * 1024);
  const auto base = reinterpret_cast<std::uintptr_t>(big.data());
  register_code(base, big.size(), "big", CodeKind::kOther);
  for (std::size_t off = 0; off < big.size(); off += 4096) ASSERT_EQ(name_at(base + off), "big") << off;
  unregister_code(base, 1);  // Any range holding the start removes all of it.
  for (std::size_t off = 0; off < big.size(); off += 4096) ASSERT_EQ(name_at(base + off), "<none>") << off;
}

// A reader thread looks up code that the main thread keeps adding and
// releasing: every answer is whole (a name that belongs to the range found),
// and under ASan no lookup reads a freed entry.
TEST_F(CodeRegistryTest, ConcurrentLookupsSeeWholeEntriesWhileCodeComesAndGoes) {
  std::atomic<std::uintptr_t> target{0};
  std::atomic<bool> stop{false};
  std::atomic<long> lookups{0}, found{0}, torn{0};
  std::thread reader([&] {
    CodeInfo info;
    while (!stop.load()) {
      std::uintptr_t a = target.load();
      const bool hit = a != 0 && find_code(a, info);
      lookups.fetch_add(1);
      if (!hit) continue;
      // Either Jit's own name or the test's rename, both derived from this very entry.
      char jit_name[64], renamed[64];
      std::snprintf(jit_name, sizeof jit_name, "jit:0x%lx", static_cast<unsigned long>(info.start));
      std::snprintf(renamed, sizeof renamed, "gen_%lx_%zu_", static_cast<unsigned long>(info.start), info.size);
      const bool whole =
          std::strcmp(info.name, jit_name) == 0 || std::strncmp(info.name, renamed, std::strlen(renamed)) == 0;
      if (!whole || !info.contains(a)) ++torn;
      ++found;
    }
  });
  for (int i = 0; i < 150; ++i) {
    CodeHolder code;
    emit_const(code, i, i % 40);
    // The name encodes the start and size, so the reader can check an answer is whole.
    auto fn = jit->add(code);
    ASSERT_TRUE(fn);
    const std::size_t size = code.codeSize();
    char name[64];
    std::snprintf(name, sizeof name, "gen_%lx_%zu_%d", static_cast<unsigned long>(addr(*fn)), size, i);
    register_code(addr(*fn), size, name, CodeKind::kJit);  // Renames it (replaces the jit:0x entry).
    // At least one whole lookup of the live function, then release it (the
    // reader may be inside a lookup meanwhile: that is the point).
    const long before = lookups.load();
    target.store(addr(*fn) + size / 2);
    while (lookups.load() < before + 2) std::this_thread::yield();
    ASSERT_TRUE(jit->release(*fn));
  }
  stop.store(true);
  reader.join();
  EXPECT_EQ(torn.load(), 0);
  EXPECT_GE(found.load(), 150) << "each function was found while it lived";
}

// fork() copies the reader counters while another thread may be inside a
// lookup; that thread does not exist in the child, so the child's writes must
// not wait for it. Many forks while a thread looks up without pause: each
// child registers and unregisters (an alarm kills a child that hangs).
TEST(CodeRegistry, ForkChildWritesWhileTheParentsReaderWasMidLookup) {
  const auto base = reinterpret_cast<std::uintptr_t>(kOutsideCode);
  register_code(base, 64, "looked_up_by_the_parent", CodeKind::kOther);
  std::atomic<bool> stop{false};
  std::thread reader([&] {
    CodeInfo info;
    while (!stop.load()) (void)find_code(base, info);
  });
  int hung = 0;
  for (int i = 0; i < 20; ++i) {
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      alarm(10);
      register_code(base + 128, 64, "child_code", CodeKind::kOther);
      unregister_code(base + 128, 64);
      _exit(0);
    }
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    hung += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  stop.store(true);
  reader.join();
  unregister_code(base, 64);
  EXPECT_EQ(hung, 0) << "children that waited for a reader that does not exist in them";
}

// A profiler's signal handler looks up code while the interrupted thread may
// be in the middle of adding or releasing (holding the registry's lock or
// waiting for readers): it never blocks.
std::atomic<std::uintptr_t> g_signal_target{0};
std::atomic<long> g_signal_lookups{0}, g_signal_hits{0};

void on_sigprof(int) {
  CodeInfo info;
  if (find_code(g_signal_target.load(), info)) g_signal_hits.fetch_add(1);
  g_signal_lookups.fetch_add(1);
}

TEST_F(CodeRegistryTest, SignalHandlerLookupNeverBlocksEvenWhenItInterruptsAWriter) {
  CodeHolder kept_code;
  emit_const(kept_code, 5);
  auto kept = jit->add(kept_code, {"kept_for_the_handler"});
  ASSERT_TRUE(kept);
  g_signal_target.store(addr(*kept));

  struct sigaction sa {
  }, old{};
  sa.sa_handler = on_sigprof;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGPROF, &sa, &old), 0);
  const pthread_t main_thread = pthread_self();
  std::atomic<bool> stop{false};
  std::thread sender([&] {
    while (!stop.load()) {
      pthread_kill(main_thread, SIGPROF);
      std::this_thread::yield();
    }
  });
  for (int i = 0; i < 200; ++i) {
    CodeHolder code;
    emit_const(code, i);
    auto fn = jit->add(code, {"churn"});
    ASSERT_TRUE(fn);
    ASSERT_TRUE(jit->release(*fn));
    on_sigprof(0);  // At least one lookup, even if the sender is slow to start.
  }
  stop.store(true);
  sender.join();
  ASSERT_EQ(sigaction(SIGPROF, &old, nullptr), 0);
  EXPECT_GT(g_signal_lookups.load(), 0);
  EXPECT_EQ(g_signal_hits.load(), g_signal_lookups.load()) << "the kept function is always found";
  ASSERT_TRUE(jit->release(*kept));
}

}  // namespace
}  // namespace punch::runtime
