// function_containing: a function's extent from the dynamic symbols, the
// file's .symtab or the unwind tables, in that order; a refusal that names
// what was tried; no stale answer after dlclose; usable from any thread.
#include <gtest/gtest.h>

#include <dlfcn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <punch/runtime/function_bounds.hpp>

#include "sanitizer.hpp"

// A function with no symbol at all: a local label with CFI (an FDE) only.
__asm__(
    "  .text\n"
    "  .p2align 4\n"
    ".Lbounds_fde_only:\n"
    "  .cfi_startproc\n"
    "  leaq 1(%rdi), %rax\n"
    "  ret\n"
    "  .cfi_endproc\n"
    "  .section .data.rel.ro,\"aw\"\n"
    "  .p2align 3\n"
    "bounds_fde_only_address:\n"
    "  .quad .Lbounds_fde_only\n"
    "  .text\n");
extern "C" void* const bounds_fde_only_address __attribute__((visibility("hidden")));

namespace punch::runtime {
namespace {

using Source = FunctionBounds::Source;

__attribute__((noinline)) int bounds_static_function(int x) { return x * 7 + 1; }

std::uintptr_t address_of(const void* p) { return reinterpret_cast<std::uintptr_t>(p); }

TEST(FunctionBounds, LibraryFunctionsComeFromDynamicSymbols) {
  const auto abort_at = address_of(reinterpret_cast<void*>(&::abort));
  auto bounds = function_containing(abort_at + 1);
  ASSERT_TRUE(bounds) << bounds.error().describe();
  EXPECT_EQ(bounds->source, Source::kDynamicSymbol);
  EXPECT_EQ(bounds->start, abort_at);
  EXPECT_GT(bounds->end, abort_at + 1);
  EXPECT_EQ(bounds->name, "abort");
}

TEST(FunctionBounds, StaticFunctionsComeFromTheSymbolTable) {
  const auto f = address_of(reinterpret_cast<void*>(&bounds_static_function));
  for (std::uintptr_t a : {f, f + 1}) {
    auto bounds = function_containing(a);
    ASSERT_TRUE(bounds) << bounds.error().describe();
    EXPECT_EQ(bounds->source, Source::kSymbolTable);
    EXPECT_EQ(bounds->start, f);
    EXPECT_NE(bounds->name.find("bounds_static_function"), std::string::npos) << bounds->name;
  }
  EXPECT_TRUE(function_starts_at(f));
  EXPECT_FALSE(function_starts_at(f + 1));
}

TEST(FunctionBounds, AFunctionWithOnlyAnFdeComesFromTheUnwindTables) {
  const auto f = address_of(bounds_fde_only_address);
  auto bounds = function_containing(f + 4);
  ASSERT_TRUE(bounds) << bounds.error().describe();
  EXPECT_EQ(bounds->source, Source::kUnwindTable);
  EXPECT_EQ(bounds->start, f);
  EXPECT_EQ(bounds->end, f + 5);  // lea (4 bytes) + ret
  EXPECT_TRUE(function_starts_at(f));
}

TEST(FunctionBounds, AddressesInNoFunctionAreRefusedNamingWhatWasTried) {
  int local = 0;
  auto stack = function_containing(address_of(&local));
  ASSERT_FALSE(stack);
  EXPECT_EQ(stack.error().code, ErrorCode::kUnprovable);
  EXPECT_NE(stack.error().message.find(at(&local)), std::string::npos);

  // Inside this program but in data: every source was asked, and the message says so.
  static const char data[64] = {};
  auto in_data = function_containing(address_of(data) + 8);
  ASSERT_FALSE(in_data);
  EXPECT_EQ(in_data.error().code, ErrorCode::kUnprovable);
  const std::string& m = in_data.error().message;
  EXPECT_NE(m.find(at(address_of(data) + 8)), std::string::npos) << m;
  EXPECT_NE(m.find("dynamic symbols"), std::string::npos) << m;
  EXPECT_NE(m.find(".symtab"), std::string::npos) << m;
  EXPECT_NE(m.find("unwind tables"), std::string::npos) << m;
  EXPECT_FALSE(function_starts_at(address_of(data)));
}

// Each object's static function, looked up while it is loaded: a cache entry
// left by an unloaded object (the next one is often mapped at the same address)
// would give the wrong symbol or bounds.
TEST(FunctionBounds, UnloadedObjectsLeaveNoStaleEntry) {
  for (int round = 0; round < 3; ++round) {
    for (const char* path : {PUNCH_TEST_OBJECT_A, PUNCH_TEST_OBJECT_B}) {
      void* object = dlopen(path, RTLD_NOW | RTLD_LOCAL);
      ASSERT_NE(object, nullptr) << dlerror();
      auto function_of = reinterpret_cast<void* (*)()>(dlsym(object, "punch_test_object_function"));
      ASSERT_NE(function_of, nullptr);
      const auto f = address_of(function_of());
      auto bounds = function_containing(f);
      ASSERT_TRUE(bounds) << bounds.error().describe();
      EXPECT_EQ(bounds->source, Source::kSymbolTable);
      EXPECT_EQ(bounds->start, f);
      EXPECT_NE(bounds->name.find(path == std::string(PUNCH_TEST_OBJECT_A) ? "a_static" : "b_static"),
                std::string::npos)
          << bounds->name;
      ASSERT_EQ(dlclose(object), 0);
    }
  }
}

// A file replaced on disk after it was loaded is not trusted: its tables
// would describe other code. The exported function still comes from the
// loaded image's dynamic symbols (dladdr1), the static one from its FDE.
TEST(FunctionBounds, AFileReplacedOnDiskIsNotRead) {
  const std::string copy = ::testing::TempDir() + "punch_replaced_object.so";
  ASSERT_EQ(std::system(("cp " + std::string(PUNCH_TEST_OBJECT_A) + " " + copy).c_str()), 0);
  void* object = dlopen(copy.c_str(), RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(object, nullptr) << dlerror();
  // Another object renamed over the path, as a package upgrade does (writing
  // into the loaded file itself would change the mapped code).
  ASSERT_EQ(
      std::system(
          ("cp " + std::string(PUNCH_TEST_OBJECT_B) + " " + copy + ".new && mv " + copy + ".new " + copy).c_str()),
      0);
  auto function_of = reinterpret_cast<void* (*)()>(dlsym(object, "punch_test_object_function"));
  ASSERT_NE(function_of, nullptr);

  auto exported = function_containing(address_of(reinterpret_cast<void*>(function_of)));
  ASSERT_TRUE(exported) << exported.error().describe();
  EXPECT_EQ(exported->source, Source::kDynamicSymbol);
  EXPECT_EQ(exported->name, "punch_test_object_function");
  const auto f = address_of(function_of());
  auto hidden = function_containing(f);
  ASSERT_TRUE(hidden) << hidden.error().describe();
  EXPECT_EQ(hidden->source, Source::kUnwindTable);
  EXPECT_EQ(hidden->start, f);
  dlclose(object);
  std::remove(copy.c_str());
}

TEST(FunctionBounds, ThreadsLookUpConcurrently) {
  const auto f = address_of(reinterpret_cast<void*>(&bounds_static_function));
  const auto g = address_of(bounds_fde_only_address);
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        auto a = function_containing(f + 1);
        auto b = function_containing(g + 1);
        if (!a || a->start != f || !b || b->start != g) ++wrong;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
}

// The cache's lock is fork-safe: a child forked while other threads look
// functions up (and may hold the lock) can look up too.
TEST(FunctionBounds, AForkChildLooksUpWhileOtherThreadsDid) {
#ifdef PUNCH_ASAN
  GTEST_SKIP() << "clang 14's ASan allocator is not fork-safe: the child, forked while the other thread sorts a "
                  "symbol table, deadlocks inside asan_memalign (seen with gdb); the g++ build runs this test";
#endif
  const auto f = address_of(reinterpret_cast<void*>(&bounds_static_function));
  std::atomic<bool> stop{false};
  std::thread busy([&] {
    while (!stop.load()) {
      drop_function_bounds_cache();  // Every lookup maps the file again: the lock is held often and long.
      (void)function_containing(f);
    }
  });
  for (int i = 0; i < 20; ++i) {
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      auto bounds = function_containing(f + 1);
      _exit(bounds && bounds->start == f ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  stop = true;
  busy.join();
}

}  // namespace
}  // namespace punch::runtime
