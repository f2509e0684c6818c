// The files perf reads: the perf map names every piece of code as it is
// added (and what was registered before it was turned on), a fork child
// writes its own; the jitdump file holds a JIT_CODE_LOAD with the code's exact
// bytes for each, a read+exec marker mapping (allowed under PR_SET_MDWE), and
// JIT_CODE_CLOSE when turned off.
#include <punch/runtime/code_registry.hpp>
#include <punch/runtime/jit.hpp>
#include <punch/runtime/jitdump.hpp>
#include <punch/runtime/perf_map.hpp>

#include <asmjit/x86.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "own_heap_fixture.hpp"

#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#endif

namespace punch::runtime {
namespace {

using namespace asmjit;

void emit_const(CodeHolder& code, int k) {
  code.init(Jit::environment());
  x86::Assembler a(&code);
  a.mov(x86::eax, k);
  a.ret();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string map_line(void* start, std::size_t size, const std::string& name) {
  char head[64];
  std::snprintf(head, sizeof head, "%lx %lx ", reinterpret_cast<unsigned long>(start),
                static_cast<unsigned long>(size));
  return head + name + "\n";
}

class ToolFilesTest : public test::OwnHeapTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(make_heap(64 * 1024));
    jit = std::make_unique<Jit>(*heap);
  }
  void TearDown() override {
    disable_perf_map();
    disable_jitdump();
    test::OwnHeapTest::TearDown();
  }
  Result<void*> add(int k, const char* name, std::size_t* size = nullptr) {
    CodeHolder code;
    emit_const(code, k);
    auto fn = jit->add(code, {name});
    if (size) *size = code.codeSize();
    return fn;
  }
  std::unique_ptr<Jit> jit;
};

TEST_F(ToolFilesTest, PerfMapNamesCodeAddedAfterAndRegisteredBeforeItIsOn) {
  disable_perf_map();
  std::size_t before_size = 0, after_size = 0;
  auto before = add(1, "perf_map_registered_before", &before_size);
  ASSERT_TRUE(before);
  ASSERT_TRUE(enable_perf_map());
  const std::string path = perf_map_path();
  EXPECT_EQ(path, "/tmp/perf-" + std::to_string(getpid()) + ".map");
  const std::size_t entries = perf_map_entries();
  auto after = add(2, "perf_map_added_after", &after_size);
  ASSERT_TRUE(after);
  EXPECT_EQ(perf_map_entries(), entries + 1);
  const std::string text = read_file(path);
  EXPECT_NE(text.find(map_line(*before, before_size, "perf_map_registered_before")), std::string::npos) << text;
  EXPECT_NE(text.find(map_line(*after, after_size, "perf_map_added_after")), std::string::npos) << text;
  disable_perf_map();
  EXPECT_EQ(perf_map_path(), "");
  ::unlink(path.c_str());
}

TEST_F(ToolFilesTest, ForkChildWritesItsOwnPerfMapWithTheCodeItInherited) {
  std::size_t size = 0;
  auto fn = add(3, "perf_map_inherited", &size);
  ASSERT_TRUE(fn);
  ASSERT_TRUE(enable_perf_map());
  const std::string parent_path = perf_map_path();
  const std::string expected = map_line(*fn, size, "perf_map_inherited");
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    const std::string own = "/tmp/perf-" + std::to_string(getpid()) + ".map";
    const bool ok = perf_map_path() == own && read_file(own).find(expected) != std::string::npos;
    ::unlink(own.c_str());
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the child's map lacks " << expected;
  EXPECT_EQ(perf_map_path(), parent_path);
  disable_perf_map();
  ::unlink(parent_path.c_str());
}

// glibc's clone() runs no atfork handler: the child notices the new pid when
// it next adds code, and writes its own map (the inherited code, then the new).
alignas(16) const unsigned char kCloneChildCode[64] = {0xC3};

int clone_child_adds_code(void* inherited_line) {
  const auto start = reinterpret_cast<std::uintptr_t>(kCloneChildCode);
  register_code(start, sizeof kCloneChildCode, "perf_map_clone_child_code", CodeKind::kOther);
  const std::string own = "/tmp/perf-" + std::to_string(getpid()) + ".map";
  const std::string text = read_file(own);
  const bool ok = perf_map_path() == own &&
                  text.find(*static_cast<std::string*>(inherited_line)) != std::string::npos &&
                  text.find(" perf_map_clone_child_code\n") != std::string::npos;
  unregister_code(start, sizeof kCloneChildCode);
  ::unlink(own.c_str());
  _exit(ok ? 0 : 1);
}

TEST_F(ToolFilesTest, RawCloneChildWritesItsOwnPerfMapWhenItAddsCode) {
  std::size_t size = 0;
  auto fn = add(7, "perf_map_inherited_by_clone", &size);
  ASSERT_TRUE(fn);
  ASSERT_TRUE(enable_perf_map());
  const std::string parent_path = perf_map_path();
  std::string expected = map_line(*fn, size, "perf_map_inherited_by_clone");
  constexpr std::size_t kStack = 256 * 1024;
  void* stack = ::mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(stack, MAP_FAILED);
  const pid_t child = ::clone(clone_child_adds_code, static_cast<char*>(stack) + kStack, SIGCHLD, &expected);
  ASSERT_GT(child, 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ::munmap(stack, kStack);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(read_file(parent_path).find("perf_map_clone_child_code"), std::string::npos)
      << "the child never writes into its parent's map";
  disable_perf_map();
  ::unlink(parent_path.c_str());
}

// The records of a jitdump file.
struct Load {
  std::uint64_t timestamp, addr, size, index;
  std::string name;
  std::vector<std::uint8_t> bytes;
};
struct Dump {
  bool header_ok = false;
  std::vector<Load> loads;
  std::vector<std::uint32_t> ids;  // Every record, in file order.
  bool timestamps_ordered = true;
};

Dump parse_dump(const std::string& path) {
  const std::string raw = read_file(path);
  Dump d;
  auto u32 = [&](std::size_t at) {
    std::uint32_t v;
    std::memcpy(&v, raw.data() + at, 4);
    return v;
  };
  auto u64 = [&](std::size_t at) {
    std::uint64_t v;
    std::memcpy(&v, raw.data() + at, 8);
    return v;
  };
  if (raw.size() < 40) return d;
  d.header_ok = u32(0) == 0x4A695444 && u32(4) == 1 && u32(8) == 40 && u32(12) == 62 &&
                u32(20) == static_cast<std::uint32_t>(getpid());
  std::uint64_t last = 0;
  for (std::size_t at = u32(8); at + 16 <= raw.size();) {
    const std::uint32_t id = u32(at), total = u32(at + 4);
    const std::uint64_t ts = u64(at + 8);
    if (total < 16 || at + total > raw.size()) break;
    d.timestamps_ordered &= ts >= last;
    last = ts;
    d.ids.push_back(id);
    if (id == 0) {
      Load l{ts, u64(at + 24), u64(at + 40), u64(at + 48), {}, {}};
      l.name = std::string(raw.c_str() + at + 56);
      const std::size_t code = at + 56 + l.name.size() + 1;
      l.bytes.assign(raw.begin() + static_cast<long>(code), raw.begin() + static_cast<long>(code + l.size));
      d.loads.push_back(std::move(l));
    }
    at += total;
  }
  return d;
}

bool marker_mapped(const std::string& path) {
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);)
    if (line.find(path) != std::string::npos && line.find(" r-xp ") != std::string::npos) return true;
  return false;
}

TEST_F(ToolFilesTest, JitdumpRecordsEachFunctionsBytesAndClosesWhenTurnedOff) {
  char dir[] = "/tmp/punch_jitdump_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::size_t size = 0;
  auto early = add(4, "jitdump_registered_before");
  ASSERT_TRUE(early);
  ASSERT_TRUE(enable_jitdump(dir));
  const std::string path = jitdump_path();
  EXPECT_EQ(path, std::string(dir) + "/jit-" + std::to_string(getpid()) + ".dump");
  EXPECT_TRUE(marker_mapped(path)) << "perf learns of the file from a read+exec mapping";
  auto fn = add(5, "jitdump_function", &size);
  ASSERT_TRUE(fn);
  const std::vector<std::uint8_t> written(static_cast<std::uint8_t*>(*fn), static_cast<std::uint8_t*>(*fn) + size);
  ASSERT_TRUE(jit->release(*fn));
  CodeInfo info;
  EXPECT_FALSE(find_code(reinterpret_cast<std::uintptr_t>(*fn), info)) << "released code leaves the registry";
  disable_jitdump();
  EXPECT_FALSE(marker_mapped(path));

  const Dump d = parse_dump(path);
  EXPECT_TRUE(d.header_ok);
  EXPECT_TRUE(d.timestamps_ordered);
  ASSERT_FALSE(d.ids.empty());
  EXPECT_EQ(d.ids.back(), 3u) << "JIT_CODE_CLOSE is the last record";
  bool saw_early = false, saw_fn = false;
  for (const Load& l : d.loads) {
    saw_early |= l.name == "jitdump_registered_before" && l.addr == reinterpret_cast<std::uintptr_t>(*early);
    if (l.name == "jitdump_function") {
      saw_fn = true;
      EXPECT_EQ(l.addr, reinterpret_cast<std::uintptr_t>(*fn));
      EXPECT_EQ(l.bytes, written) << "the record holds the code as written";
    }
  }
  EXPECT_TRUE(saw_early) << "code registered before enabling is recorded at enable";
  EXPECT_TRUE(saw_fn);
  for (std::size_t i = 1; i < d.loads.size(); ++i) EXPECT_EQ(d.loads[i].index, d.loads[i - 1].index + 1);
  ::unlink(path.c_str());
  ::rmdir(dir);
}

// PR_SET_MDWE refuses memory that is or becomes writable+executable; the
// marker is a fresh read+exec mapping of a file, which it allows. A child
// turns MDWE on for itself only (it cannot be turned off), then enables jitdump.
TEST_F(ToolFilesTest, JitdumpWorksUnderMdweAndInAForkChild) {
  char dir[] = "/tmp/punch_jitdump_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  auto fn = add(6, "jitdump_inherited");
  ASSERT_TRUE(fn);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (prctl(PR_SET_MDWE, 1UL, 0L, 0L, 0L) != 0 && errno != EINVAL) _exit(2);
    if (!enable_jitdump(dir)) _exit(3);
    const std::string path = jitdump_path();
    if (!marker_mapped(path)) _exit(4);
    disable_jitdump();
    const Dump d = parse_dump(path);
    bool inherited = false;
    for (const Load& l : d.loads) inherited |= l.name == "jitdump_inherited";
    ::unlink(path.c_str());
    _exit(d.header_ok && inherited && d.ids.back() == 3 ? 0 : 5);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status)) << "signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "2: MDWE refused, 3: enable failed, 4: no marker, 5: bad file";
  ::rmdir(dir);
}

}  // namespace
}  // namespace punch::runtime
