// W^X: while code is emitted, freed and reused, no mapping of the process is
// writable and executable at once, and with proc-mem no writable mapping
// aliases code (no memfd or shared file view of it exists).
#include <asmjit/x86.h>
#include <gtest/gtest.h>

#include "method_unavailable.hpp"

#include <atomic>
#include <random>
#include <thread>

#include <punch/runtime/jit.hpp>
#include <punch/runtime/maps.hpp>

namespace punch::runtime {
namespace {

// "" when the maps are fine, else the offending line(s).
std::string wx_violations(bool forbid_writable_alias) {
  auto maps = read_mappings();
  if (!maps) return maps.error().describe();
  std::string bad;
  for (const Mapping& m : *maps) {
    if (m.writable && m.executable) bad += "w+x: " + at(m.start) + " " + m.path + "\n";
    if (!forbid_writable_alias || !m.executable) continue;
    // Code backed by a file or memfd could have a writable twin: look for one.
    if (m.inode == 0) continue;
    for (const Mapping& other : *maps)
      if (other.writable && other.shared && other.inode == m.inode && other.device == m.device)
        bad += "writable alias of code at " + at(m.start) + ": " + at(other.start) + " " + other.path + "\n";
  }
  return bad;
}

void emit_free_reuse(Jit& jit, int rounds) {
  std::mt19937 rng(1);
  std::vector<void*> live;
  for (int i = 0; i < rounds; ++i) {
    if (!live.empty() && rng() % 3 == 0) {
      ASSERT_TRUE(jit.release(live.back()));
      live.pop_back();
      continue;
    }
    asmjit::CodeHolder code;
    code.init(Jit::environment());
    asmjit::x86::Assembler a(&code);
    a.mov(asmjit::x86::eax, i);
    for (unsigned k = 0; k < rng() % 200; ++k) a.nop();
    a.ret();
    auto fn = jit.add_as<int (*)()>(code);
    ASSERT_TRUE(fn) << fn.error().describe();
    ASSERT_EQ((*fn)(), i);
    live.push_back(reinterpret_cast<void*>(*fn));
  }
  for (void* fn : live) ASSERT_TRUE(jit.release(fn));
}

class WxInvariantTest : public ::testing::TestWithParam<WriteMethod> {};

TEST_P(WxInvariantTest, NoWritableExecutableMappingWhileEmittingFreeingReusing) {
  auto writer = CodeWriter::create(GetParam());
  PUNCH_SKIP_IF_METHOD_UNAVAILABLE(GetParam(), writer);
  const bool proc_mem = GetParam() == WriteMethod::kProcMem;
  ASSERT_EQ(wx_violations(proc_mem), "") << "before anything was emitted";

  // A watcher reads the maps continuously while the main thread works.
  std::atomic<bool> stop{false};
  std::string seen;
  std::atomic<int> looks{0};
  std::thread watcher([&] {
    while (!stop) {
      std::string v = wx_violations(proc_mem);
      if (!v.empty() && seen.empty()) seen = v;
      ++looks;
    }
  });
  {
    CodeHeap heap(**writer, 64 * 1024);
    Jit jit(heap);
    emit_free_reuse(jit, 400);
    EXPECT_EQ(wx_violations(proc_mem), "");
  }
  while (looks.load() < 2) std::this_thread::yield();
  stop = true;
  watcher.join();
  EXPECT_EQ(seen, "");
}

INSTANTIATE_TEST_SUITE_P(AllMethods, WxInvariantTest,
                         ::testing::Values(WriteMethod::kProcMem, WriteMethod::kDualMap, WriteMethod::kMprotect),
                         [](const auto& case_info) {
                           std::string name(to_string(case_info.param));
                           std::erase(name, '-');
                           return name;
                         });

}  // namespace
}  // namespace punch::runtime
