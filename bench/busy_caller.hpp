// BusyCaller: the "one busy thread" of punch's benchmarks.
//
// A thread that calls `body` in a loop, pinned to another CPU than the
// measuring thread (which is pinned too, for the object's lifetime), so both
// really run at once on a 2-CPU machine: that is when membarrier, signals and
// mprotect's TLB shootdowns pay for the other thread. It counts its calls, so
// a benchmark can report (`busy_calls` per iteration) that it ran meanwhile.
#pragma once

#include <benchmark/benchmark.h>
#include <sched.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>

namespace punch::bench {

class BusyCaller {
 public:
  //! Starts the thread when `on`, and returns once it has called `body` at least once.
  BusyCaller(bool on, std::function<void()> body) {
    if (!on) return;
    sched_getaffinity(0, sizeof saved_, &saved_);
    thread_ = std::thread([this, body = std::move(body)] {
      pin_to(true);
      while (!stop_.load(std::memory_order_relaxed)) {
        body();
        calls_.fetch_add(1, std::memory_order_relaxed);
      }
    });
    pin_to(false);
    while (calls_.load() == 0) std::this_thread::yield();
  }
  ~BusyCaller() {
    stop_ = true;
    if (thread_.joinable()) {
      thread_.join();
      sched_setaffinity(0, sizeof saved_, &saved_);
    }
  }
  BusyCaller(const BusyCaller&) = delete;
  BusyCaller& operator=(const BusyCaller&) = delete;

  //! Calls so far.
  std::uint64_t calls() const { return calls_.load(std::memory_order_relaxed); }

  //! Sets the `busy_calls` counter: calls per iteration since `before` (a value of calls()).
  void report(benchmark::State& state, std::uint64_t before) const {
    if (thread_.joinable() && state.iterations() > 0)
      state.counters["busy_calls"] = static_cast<double>(calls() - before) / static_cast<double>(state.iterations());
  }

 private:
  // Pins the calling thread to one CPU: the last allowed one for the busy thread, the first for the measurer.
  static void pin_to(bool last) {
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0 || CPU_COUNT(&allowed) < 2) return;
    int chosen = -1;
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
      if (CPU_ISSET(cpu, &allowed) && (last || chosen < 0)) chosen = cpu;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(chosen, &one);
    sched_setaffinity(0, sizeof one, &one);
  }

  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> calls_{0};
  std::thread thread_;
  cpu_set_t saved_{};
};

}  // namespace punch::bench
