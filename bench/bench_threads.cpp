// What a live change costs per thread of the process, with the threads held
// still (the default) and without (hold_threads = false: the old behaviour,
// where a single-instruction site needs no rendezvous and a multi-instruction
// site a fix-up round that signals every thread).
//
// BM_Threads/<site>/<how>/sleepers:N: a commit plus a revert of one site
// while N threads sleep. `site`: one_insn (`mov eax, imm32`) or multi_insn (a
// 5-byte jmp over a three-instruction prologue, which needs the fix-up).
// `how`: `futex` sleepers wait on a condition variable and `read` sleepers
// block on a pipe (both held: signalled, their call resumes); `poll` sleepers
// wait in poll() on a pipe (left asleep, their position read from /proc, a
// tripwire over where they resume); `unheld` is the futex case with
// hold_threads = false.
#include <benchmark/benchmark.h>

#include <poll.h>
#include <unistd.h>

#include <asmjit/x86.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include <punch/patcher/transaction.hpp>
#include <punch/runtime/code_heap.hpp>
#include <punch/runtime/jit.hpp>

namespace {

using namespace punch;

// N threads asleep on a condition variable, in read() or in poll() on a pipe until destroyed.
class Sleepers {
 public:
  enum How { kFutex, kRead, kPoll };
  Sleepers(int n, How how) : how_(how) {
    if (::pipe(pipe_) != 0) return;
    for (int i = 0; i < n; ++i)
      threads_.emplace_back([this] {
        if (how_ == kRead) {
          char c;
          (void)::read(pipe_[0], &c, 1);
          return;
        }
        if (how_ == kPoll) {
          pollfd p{pipe_[0], POLLIN, 0};
          while (!stopping_.load()) (void)::poll(&p, 1, -1);
          return;
        }
        std::unique_lock lock(m_);
        cv_.wait(lock, [this] { return stop_; });
      });
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + n / 10));  // All asleep.
  }
  ~Sleepers() {
    stopping_ = true;
    {
      std::lock_guard lock(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (std::size_t i = 0; i < threads_.size(); ++i) (void)!::write(pipe_[1], "x", 1);
    for (auto& t : threads_) t.join();
    ::close(pipe_[0]);
    ::close(pipe_[1]);
  }

 private:
  How how_;
  std::atomic<bool> stopping_{false};
  int pipe_[2] = {-1, -1};
  std::mutex m_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

std::uintptr_t emit(bool multi) {
  auto heap = runtime::CodeHeap::global();
  if (!heap) return 0;
  runtime::Jit jit(**heap);
  asmjit::CodeHolder code;
  code.init(runtime::Jit::environment());
  asmjit::x86::Assembler a(&code);
  namespace x86 = asmjit::x86;
  if (multi) {
    a.push(x86::rbx);
    a.mov(x86::ebx, x86::edi);
    a.mov(x86::eax, x86::ebx);
    a.pop(x86::rbx);
  } else {
    a.mov(x86::eax, 1);
  }
  a.ret();
  auto fn = jit.add(code);
  return fn ? reinterpret_cast<std::uintptr_t>(*fn) : 0;
}

enum How { kFutex, kRead, kUnheld, kPoll };

void BM_Threads(benchmark::State& state, bool multi, How how) {
  const int n = static_cast<int>(state.range(0));
  const std::uintptr_t f = emit(multi);
  const std::uintptr_t other = emit(multi);
  if (!f || !other) return state.SkipWithError("emitting the site failed");
  std::vector<std::uint8_t> from(reinterpret_cast<const std::uint8_t*>(f),
                                 reinterpret_cast<const std::uint8_t*>(f) + 5);
  std::vector<std::uint8_t> to{0xB8, 2, 0, 0, 0};  // mov eax, 2
  if (multi) {                                     // jmp other
    const auto rel = static_cast<std::int32_t>(static_cast<std::int64_t>(other) - static_cast<std::int64_t>(f + 5));
    to = {0xE9, 0, 0, 0, 0};
    std::memcpy(to.data() + 1, &rel, 4);
  }
  patcher::TransactionOptions options;
  options.hold_threads = how != kUnheld;
  patcher::Transaction tx(options);
  if (!tx.add({f, from, to, std::nullopt})) return state.SkipWithError("add failed");
  Sleepers sleepers(n, how == kRead ? Sleepers::kRead : how == kPoll ? Sleepers::kPoll : Sleepers::kFutex);
  for (auto _ : state) {
    auto committed = tx.commit();
    auto reverted = committed ? tx.revert() : committed;
    if (!reverted) return state.SkipWithError(reverted.error().describe().c_str());
  }
}

void BM_Threads_one_futex(benchmark::State& s) { BM_Threads(s, false, kFutex); }
void BM_Threads_one_read(benchmark::State& s) { BM_Threads(s, false, kRead); }
void BM_Threads_one_poll(benchmark::State& s) { BM_Threads(s, false, kPoll); }
void BM_Threads_one_unheld(benchmark::State& s) { BM_Threads(s, false, kUnheld); }
void BM_Threads_multi_futex(benchmark::State& s) { BM_Threads(s, true, kFutex); }
void BM_Threads_multi_read(benchmark::State& s) { BM_Threads(s, true, kRead); }
void BM_Threads_multi_poll(benchmark::State& s) { BM_Threads(s, true, kPoll); }
void BM_Threads_multi_unheld(benchmark::State& s) { BM_Threads(s, true, kUnheld); }

#define PUNCH_THREADS_ROW(fn, name) \
  BENCHMARK(fn)                     \
      ->Name(name)                  \
      ->ArgName("sleepers")         \
      ->Arg(0)                      \
      ->Arg(100)                    \
      ->Arg(1000)                   \
      ->UseRealTime()               \
      ->Unit(benchmark::kMicrosecond)
PUNCH_THREADS_ROW(BM_Threads_one_futex, "BM_Threads/one_insn/futex");
PUNCH_THREADS_ROW(BM_Threads_one_read, "BM_Threads/one_insn/read");
PUNCH_THREADS_ROW(BM_Threads_one_poll, "BM_Threads/one_insn/poll");
PUNCH_THREADS_ROW(BM_Threads_one_unheld, "BM_Threads/one_insn/unheld");
PUNCH_THREADS_ROW(BM_Threads_multi_futex, "BM_Threads/multi_insn/futex");
PUNCH_THREADS_ROW(BM_Threads_multi_read, "BM_Threads/multi_insn/read");
PUNCH_THREADS_ROW(BM_Threads_multi_poll, "BM_Threads/multi_insn/poll");
PUNCH_THREADS_ROW(BM_Threads_multi_unheld, "BM_Threads/multi_insn/unheld");

}  // namespace
