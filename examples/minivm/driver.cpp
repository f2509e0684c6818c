#include "driver.hpp"

#include <atomic>
#include <chrono>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "vm.hpp"

namespace minivm {
namespace {

using Clock = std::chrono::steady_clock;

punch::Result<std::string> expected_result(const Program& program) {
  auto vm = Vm::create(program, Tier::kInterpreter);
  if (!vm) return tl::unexpected(std::move(vm).error());
  ThreadState t(**vm);
  auto v = (*vm)->run(t);
  if (!v) return tl::unexpected(std::move(v).error());
  return describe(*v);
}

// Whether invalidating `f` can send a thread running it to the interpreter:
// its code has guards (at loop heads and global reads).
bool has_guards(const Function& f) {
  for (std::size_t pc = 0; pc < f.code.size(); ++pc)
    if (f.code[pc].op == Op::kGget || jumps_back(f.code[pc], static_cast<int>(pc))) return true;
  return false;
}

// Every millisecond or so, recompiles a random function or invalidates one
// that has guards, and frees the code no thread can be in any more.
void chaos(Vm& vm, const std::atomic<bool>& stop) {
  std::mt19937 random(12345);
  std::vector<FunctionState*> guarded;
  for (std::size_t i = 0; i < vm.function_count(); ++i)
    if (has_guards(*vm.function(static_cast<int>(i)).code)) guarded.push_back(&vm.function(static_cast<int>(i)));
  while (!stop.load()) {
    if (random() % 2 || guarded.empty())
      (void)vm.compile(vm.function(static_cast<int>(random() % vm.function_count())));  // A failure keeps the old code.
    else
      (void)vm.invalidate(*guarded[random() % guarded.size()]);
    vm.reclaim();
    std::this_thread::sleep_for(std::chrono::microseconds(500 + random() % 1000));
  }
}

}  // namespace

punch::Result<DriverReport> run_driver(const Program& program, const DriverOptions& options) {
  DriverReport report;
  auto expected = expected_result(program);
  if (!expected) return tl::unexpected(std::move(expected).error());
  report.expected = *expected;

  auto created = Vm::create(program, Tier::kTiered, options.hot_calls);
  if (!created) return tl::unexpected(std::move(created).error());
  Vm& vm = **created;
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> runs{0}, wrong{0};
  std::mutex report_mutex;
  const auto deadline = Clock::now() + std::chrono::duration<double>(options.seconds);

  auto worker = [&] {
    ThreadState t(vm);
    do {
      auto v = vm.run(t);
      const std::string result = v ? describe(*v) : "error";
      runs.fetch_add(1);
      std::lock_guard lock(report_mutex);
      report.result = result;
      if (result != report.expected) {
        wrong.fetch_add(1);
        if (report.first_error.empty()) report.first_error = v ? "result " + result : v.error().describe();
      }
    } while (Clock::now() < deadline);
  };
  std::thread chaos_thread(chaos, std::ref(vm), std::cref(stop));
  std::vector<std::thread> workers;
  for (int i = 0; i < options.threads; ++i) workers.emplace_back(worker);
  for (auto& w : workers) w.join();
  stop.store(true);
  chaos_thread.join();
  vm.reclaim();

  report.runs = runs.load();
  report.wrong = wrong.load();
  const Counters& c = vm.counters();
  report.ic_patches = c.ic_patches.load();
  report.call_retargets = c.call_retargets.load();
  report.deopts = c.deopts.load();
  report.compiles = c.compiles.load();
  report.guards_tripped = c.guards_tripped.load();
  report.entries_invalidated = c.entries_invalidated.load();
  report.versions_freed = c.versions_freed.load();
  return report;
}

}  // namespace minivm
