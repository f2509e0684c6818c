// ranges_in_use: a range is free only when no thread can be executing it.
// It protects every "free this code now" decision in punch (out-of-line
// copies, hook trampolines, a VM's replaced JIT code).
#include <punch/runtime/threads.hpp>

#include <asmjit/x86.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include <punch/runtime/jit.hpp>

namespace punch::runtime {
namespace {

using namespace std::chrono_literals;

// `spin: test byte [flag], 1; jz spin; ret` — a thread parks inside it until released.
struct SpinFunction {
  std::atomic<std::uint8_t> release{0};
  CodeRange range;
  void (*fn)() = nullptr;
};

void emit_spin(Jit& jit, SpinFunction& spin) {
  using namespace asmjit;
  CodeHolder holder;
  holder.init(Jit::environment());
  x86::Assembler a(&holder);
  Label loop = a.newLabel();
  a.mov(x86::rcx, imm(reinterpret_cast<std::uint64_t>(&spin.release)));
  a.bind(loop);
  a.test(x86::byte_ptr(x86::rcx), 1);
  a.jz(loop);
  a.ret();
  auto fn = jit.add_as<void (*)()>(holder);
  ASSERT_TRUE(fn) << fn.error().describe();
  spin.fn = *fn;
  const auto base = reinterpret_cast<std::uintptr_t>(*fn);
  spin.range = {base, base + holder.codeSize()};
}

TEST(RangesInUse, RangeHoldingARunningThreadIsInUseAndOthersAreNot) {
  auto heap = CodeHeap::global();
  ASSERT_TRUE(heap) << heap.error().describe();
  Jit jit(**heap);
  SpinFunction spin;
  emit_spin(jit, spin);
  ASSERT_NE(spin.fn, nullptr);
  const CodeRange elsewhere{spin.range.end + 4096, spin.range.end + 8192};

  std::atomic<bool> started{false};
  std::thread spinner([&] {
    started = true;
    spin.fn();
  });
  while (!started) std::this_thread::yield();
  // The thread may not be in the loop yet: ask until it is seen there (it stays there until released).
  std::vector<bool> in_use;
  for (int round = 0; round < 5000; ++round) {
    CodeRange ranges[] = {spin.range, elsewhere};
    auto r = ranges_in_use(ranges, 5000ms);
    ASSERT_TRUE(r) << r.error().describe();
    in_use = *r;
    if (in_use[0]) break;
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_TRUE(in_use[0]) << "the spinning thread's rip was never found in its function";
  EXPECT_FALSE(in_use[1]) << "a range no thread runs was reported in use";

  spin.release = 1;
  spinner.join();
  CodeRange ranges[] = {spin.range};
  auto after = ranges_in_use(ranges, 5000ms);
  ASSERT_TRUE(after) << after.error().describe();
  EXPECT_FALSE((*after)[0]) << "the thread left the function; it must be free now";
  EXPECT_TRUE(jit.release(reinterpret_cast<void*>(spin.fn)));
}

// A thread with every signal blocked cannot answer. Blocked in read(), it is
// provably outside the range; running in user space, it is not.
TEST(RangesInUse, UnansweringThreadCountsOnlyWhenNotProvablyBlockedElsewhere) {
  const CodeRange somewhere{0x10000, 0x20000};
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  std::atomic<pid_t> tid{0};
  std::atomic<bool> stop_spinning{false};
  std::atomic<int> mode{0};  // 0: block in read(); 1: spin.
  std::thread silent([&] {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    tid = ::gettid();
    char c;
    (void)!::read(fds[0], &c, 1);
    mode = 1;
    while (!stop_spinning) {
    }
  });
  while (tid == 0) std::this_thread::yield();
  while (!blocked_syscall_address(tid)) std::this_thread::sleep_for(1ms);  // Until it blocks in read().

  CodeRange ranges[] = {somewhere};
  auto blocked = ranges_in_use(ranges, 100ms);
  ASSERT_TRUE(blocked) << blocked.error().describe();
  EXPECT_FALSE((*blocked)[0]) << "a thread blocked in read() outside the range was counted as inside";

  (void)!::write(fds[1], "x", 1);
  while (mode != 1) std::this_thread::yield();
  auto running = ranges_in_use(ranges, 100ms);
  ASSERT_TRUE(running) << running.error().describe();
  EXPECT_TRUE((*running)[0]) << "a running thread that cannot answer must count as possibly inside";

  stop_spinning = true;
  silent.join();
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST(RangesInUse, NoRangesNeedNoRendezvous) {
  auto r = ranges_in_use({}, 10ms);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_TRUE(r->empty());
}

}  // namespace
}  // namespace punch::runtime
