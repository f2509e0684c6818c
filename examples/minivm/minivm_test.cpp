// minivm: the assembler refuses bad programs clearly; the interpreter and the
// JIT agree on every shipped and generated program; the JIT's patch paths
// (inline-cache updates, call retargets, tripped guards and deopts, entry
// invalidation, freeing retired code) all run.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "assembler.hpp"
#include "driver.hpp"
#include "generator.hpp"
#include "patch_sites.hpp"
#include "vm.hpp"

namespace minivm {
namespace {

std::string read_program(const std::string& name) {
  std::ifstream in(std::string(MINIVM_PROGRAMS_DIR) + "/" + name + ".mvm");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

Program must_assemble(const std::string& text) {
  auto program = assemble(text);
  EXPECT_TRUE(program) << program.error().describe() << "\n" << text;
  return program ? std::move(*program) : Program{};
}

std::unique_ptr<Vm> must_create(const Program& program, Tier tier) {
  auto vm = Vm::create(program, tier);
  EXPECT_TRUE(vm) << vm.error().describe();
  return vm ? std::move(*vm) : nullptr;
}

// What each run gives, as text ("error: ..." for a failed run).
std::vector<std::string> run_times(Vm& vm, int runs) {
  ThreadState t(vm);
  std::vector<std::string> results;
  for (int i = 0; i < runs; ++i) {
    auto v = vm.run(t);
    results.push_back(v ? describe(*v) : "error: " + v.error().message);
  }
  return results;
}

// The interpreter's result, and every tier's over several runs, must be one.
void expect_tiers_agree(const std::string& text, const std::string& what) {
  Program program = must_assemble(text);
  auto reference = must_create(program, Tier::kInterpreter);
  ASSERT_TRUE(reference);
  const std::string expected = run_times(*reference, 1)[0];
  for (Tier tier : {Tier::kEager, Tier::kTiered}) {
    auto vm = must_create(program, tier);
    ASSERT_TRUE(vm);
    for (const std::string& result : run_times(*vm, 4))
      ASSERT_EQ(result, expected) << what << " in tier " << static_cast<int>(tier) << "\n" << text;
  }
}

TEST(MinivmAssembler, RefusesBadProgramsNamingTheLine) {
  struct Case {
    const char* text;
    const char* message;
  };
  const Case cases[] = {
      {"func main 0\n  frob r0\n  ret r0\nend\n", "line 2: unknown instruction `frob`"},
      {"func main 0\n  const x0 1\n  ret r0\nend\n", "line 2: `x0` is not a register"},
      {"func main 0\n  jmp nowhere\nend\n", "line 2: unknown label `nowhere`"},
      {"func main 0\n  call r0 f r1\n  ret r0\nend\n", "line 2: unknown function `f`"},
      {"func f 2\n  ret r0\nend\nfunc main 0\n  call r0 f r1\n  ret r0\nend\n", "line 5: `f` takes 2 arguments, not 1"},
      {"func main 0\n  const r0 1\nend\n", "line 3: function `main` must end with `ret` or `jmp`"},
      {"func main 0\n  gget r0 g\n  ret r0\nend\n", "line 2: unknown global `g`"},
      {"func f 0\n  ret r0\nend\n", "no function `main`"},
      {"func main 0\n  const r0 9223372036854775807\n  ret r0\nend\n",
       "line 2: `9223372036854775807` is not an integer"},
  };
  for (const Case& c : cases) {
    auto program = assemble(c.text);
    ASSERT_FALSE(program) << c.text;
    EXPECT_NE(program.error().message.find(c.message), std::string::npos) << program.error().message;
  }
}

TEST(MinivmTiers, AgreeOnEveryShippedProgram) {
  for (const char* name : {"properties", "calls", "shapes"}) expect_tiers_agree(read_program(name), name);
}

TEST(MinivmTiers, AgreeOnGeneratedPrograms) {
  for (std::uint32_t seed = 1; seed <= 150; ++seed)
    expect_tiers_agree(generate_program(seed), "seed " + std::to_string(seed));
}

TEST(MinivmTiers, ReportTheSameErrorsAfterADeopt) {
  // `add` on an object, reached in JIT code: the type check exits to the interpreter, which reports it.
  expect_tiers_agree("func main 0\n  new r1\n  const r0 1\n  add r0 r0 r1\n  ret r0\nend\n", "type error");
  // Unbounded recursion: the JIT's stack check exits too.
  expect_tiers_agree("func f 1\n  call r0 f r0\n  ret r0\nend\nfunc main 0\n  call r0 f r0\n  ret r0\nend\n",
                     "stack overflow");
  // get on an integer.
  expect_tiers_agree("func main 0\n  get r0 r0 x\n  ret r0\nend\n", "get on an integer");
}

TEST(MinivmJit, RunsEveryPatchPath) {
  auto vm = must_create(must_assemble(read_program("shapes")), Tier::kEager);
  ASSERT_TRUE(vm);
  run_times(*vm, 3);
  const Counters& c = vm->counters();
  EXPECT_GT(c.ic_patches.load(), 0u);      // get/set caches filled their ways.
  EXPECT_GT(c.call_retargets.load(), 0u);  // Calls moved from interpreter stubs to compiled code.
  EXPECT_GT(c.guards_tripped.load(), 0u);  // `bias` changed under code that folded it in...
  EXPECT_GT(c.deopts.load(), 0u);          // ... and the running loop left for the interpreter.
  EXPECT_GT(c.entries_invalidated.load(), 0u);
}

TEST(MinivmJit, PolymorphicCacheFillsOneWayPerShapeAndStopsAtFour) {
  // sum_ab's two gets see five shapes: four ways each, then the generic path.
  auto vm = must_create(must_assemble(read_program("shapes")), Tier::kEager);
  ASSERT_TRUE(vm);
  run_times(*vm, 1);
  FunctionState* sum_ab = vm->find_function("sum_ab");
  ASSERT_NE(sum_ab, nullptr);
  const CodeVersion* version = sum_ab->current;
  ASSERT_NE(version, nullptr);
  ASSERT_EQ(version->caches.size(), 2u);
  for (const auto& cache : version->caches) {
    EXPECT_EQ(cache->used.load(), InlineCache::kWays);
    for (int i = 0; i < InlineCache::kWays; ++i) EXPECT_NE(cache->way[i], 0u);
  }
}

TEST(MinivmJit, RecompilingRetargetsCallersAndFreesTheOldVersionOnceNoRunIsInside) {
  auto vm = must_create(must_assemble(read_program("calls")), Tier::kEager);
  ASSERT_TRUE(vm);
  const std::string expected = run_times(*vm, 1)[0];
  const std::uint64_t retargets = vm->counters().call_retargets.load();
  for (std::size_t i = 0; i < vm->function_count(); ++i) ASSERT_TRUE(vm->compile(vm->function(static_cast<int>(i))));
  EXPECT_GT(vm->counters().call_retargets.load(), retargets);
  EXPECT_EQ(run_times(*vm, 1)[0], expected);
  EXPECT_EQ(vm->reclaim(), 0u);  // No thread is in a run: every retired version goes.
  EXPECT_GE(vm->counters().versions_freed.load(), vm->function_count());
  EXPECT_EQ(run_times(*vm, 1)[0], expected);
}

TEST(MinivmJit, InvalidatedFunctionsRunInTheInterpreterThenTierUpAgain) {
  auto vm = must_create(must_assemble(read_program("properties")), Tier::kEager);
  ASSERT_TRUE(vm);
  const std::string expected = run_times(*vm, 1)[0];
  for (std::size_t i = 0; i < vm->function_count(); ++i) {
    FunctionState& f = vm->function(static_cast<int>(i));
    ASSERT_TRUE(vm->invalidate(f));
    EXPECT_EQ(f.entry.load(), nullptr);
  }
  EXPECT_EQ(run_times(*vm, 2)[1], expected);
  for (std::size_t i = 0; i < vm->function_count(); ++i)
    EXPECT_NE(vm->function(static_cast<int>(i)).entry.load(), nullptr);
}

TEST(MinivmJit, ACacheUpdateWithAStaleExpectedWayIsRefusedAndChangesNothing) {
  auto vm = must_create(must_assemble(read_program("properties")), Tier::kEager);
  ASSERT_TRUE(vm);
  const std::string expected = run_times(*vm, 1)[0];
  FunctionState* work = vm->find_function("work");
  ASSERT_NE(work, nullptr);
  const InlineCache& cache = *work->current->caches.front();
  ASSERT_GE(cache.used.load(), 1);
  const auto* site = reinterpret_cast<const std::uint8_t*>(cache.site[0]);
  const std::vector<std::uint8_t> before(site, site + 10);
  auto refused = patch::set_imm64(cache.site[0], cache.way[0] + 1, 12345);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().address, cache.site[0]) << refused.error().describe();
  EXPECT_EQ(std::vector<std::uint8_t>(site, site + 10), before);
  EXPECT_EQ(run_times(*vm, 1)[0], expected);
}

TEST(MinivmDriver, ThreadsAgreeWhileAnotherThreadRecompilesAndInvalidates) {
  for (const char* name : {"properties", "calls", "shapes"}) {
    DriverOptions options;
    options.threads = 3;
    options.seconds = 0.3;
    auto report = run_driver(must_assemble(read_program(name)), options);
    ASSERT_TRUE(report) << report.error().describe();
    EXPECT_EQ(report->wrong, 0u) << name << ": " << report->first_error;
    EXPECT_EQ(report->result, report->expected) << name;
    EXPECT_GT(report->ic_patches, 0u) << name;
    EXPECT_GT(report->call_retargets, 0u) << name;
    EXPECT_GT(report->compiles, 0u) << name;
  }
}

}  // namespace
}  // namespace minivm
