// A second thread that keeps a CPU busy running code until destroyed: for
// tests and benchmarks where other threads must be running while code changes.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>

namespace punch::test {

class BusyThread {
 public:
  //! Starts a thread calling `work` in a loop (or spinning when empty); returns once it runs.
  explicit BusyThread(std::function<void()> work = {});
  ~BusyThread();  //!< Stops and joins it.
  BusyThread(const BusyThread&) = delete;
  BusyThread& operator=(const BusyThread&) = delete;

  std::uint64_t iterations() const { return iterations_.load(std::memory_order_relaxed); }
  pid_t tid() const { return tid_.load(std::memory_order_acquire); }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> iterations_{0};
  std::atomic<pid_t> tid_{0};
  std::thread thread_;
};

}  // namespace punch::test
