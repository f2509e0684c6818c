#include "busy_thread.hpp"

#include <unistd.h>

namespace punch::test {

BusyThread::BusyThread(std::function<void()> work)
    : thread_([this, work = std::move(work)] {
        tid_.store(::gettid(), std::memory_order_release);
        while (!stop_.load(std::memory_order_relaxed)) {
          if (work) work();
          iterations_.fetch_add(1, std::memory_order_relaxed);
        }
      }) {
  while (iterations() == 0) std::this_thread::yield();
}

BusyThread::~BusyThread() {
  stop_.store(true, std::memory_order_relaxed);
  thread_.join();
}

}  // namespace punch::test
