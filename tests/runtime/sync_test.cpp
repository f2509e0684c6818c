// Sync and thread rendezvous: every thread is reached, contexts can be moved,
// threads that cannot answer are reported (not waited for forever), threads
// that come and go do not break a rendezvous.
#include <punch/runtime/sync.hpp>
#include <punch/runtime/threads.hpp>

#include <asmjit/x86.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include <punch/runtime/jit.hpp>

#include "busy_thread.hpp"
#include "child_process.hpp"

namespace punch::runtime {
namespace {

using namespace std::chrono_literals;

TEST(Sync, AllThreadsSerializeWithBusyThreads) {
  test::BusyThread a, b, c;
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(sync_all_threads());
  EXPECT_GT(a.iterations() + b.iterations() + c.iterations(), 0u);
}

TEST(Sync, MethodIsStableAndNamed) {
  SyncMethod m = sync_method();
  EXPECT_EQ(sync_method(), m);
  EXPECT_TRUE(to_string(m) == "membarrier" || to_string(m) == "signals");
}

// Records which threads ran the visitor and the rip each was stopped at.
struct Visits {
  static constexpr int kMax = 64;
  std::atomic<pid_t> tids[kMax];
  std::atomic<std::uintptr_t> rips[kMax];
  std::atomic<int> count{0};
};

void record_visit(ucontext_t* context, void* arg) {
  auto* visits = static_cast<Visits*>(arg);
  int i = visits->count.fetch_add(1);
  if (i >= Visits::kMax) return;
  visits->tids[i].store(::gettid());
  visits->rips[i].store(static_cast<std::uintptr_t>(context->uc_mcontext.gregs[REG_RIP]));
}

TEST(VisitOtherThreads, RunsTheVisitorOnEveryOtherThreadWithItsContext) {
  test::BusyThread a, b, c;
  Visits visits;
  auto r = visit_other_threads(record_visit, &visits, 5000ms);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_TRUE(r->unanswered.empty());
  EXPECT_EQ(static_cast<int>(r->visited), visits.count.load());
  std::vector<pid_t> seen;
  for (int i = 0; i < std::min(visits.count.load(), Visits::kMax); ++i) {
    seen.push_back(visits.tids[i].load());
    EXPECT_NE(visits.rips[i].load(), 0u);
  }
  for (pid_t tid : {a.tid(), b.tid(), c.tid()}) EXPECT_NE(std::find(seen.begin(), seen.end(), tid), seen.end()) << tid;
  EXPECT_EQ(std::find(seen.begin(), seen.end(), ::gettid()), seen.end()) << "the caller is not visited";
}

// The rendezvous keeps /proc/self/task open between rounds. A fork child
// inherits that descriptor, which still lists the PARENT's threads: the child
// must list its own (here: visit its one other thread, none of the parent's).
TEST(VisitOtherThreads, ForkChildVisitsItsOwnThreadsNotTheParents) {
  test::BusyThread parent_thread;
  Visits first;
  ASSERT_TRUE(visit_other_threads(record_visit, &first, 5000ms));  // The descriptor is open now.
  const pid_t parent_tid = parent_thread.tid();
  auto outcome = test::run_in_child([parent_tid] {
    test::BusyThread child_thread;
    Visits visits;
    auto r = visit_other_threads(record_visit, &visits, 5000ms);
    CHILD_OK(r);
    CHILD_CHECK(r->unanswered.empty(), "%zu threads did not answer", r->unanswered.size());
    CHILD_CHECK(r->visited == 1 && visits.count.load() == 1, "visited %zu threads, expected the child's one",
                r->visited);
    CHILD_CHECK(visits.tids[0].load() == child_thread.tid(), "visited tid %d, the child's thread is %d (parent's %d)",
                visits.tids[0].load(), child_thread.tid(), parent_tid);
    return 0;
  });
  EXPECT_CHILD_OK(outcome);
}

// The spinning function: `spin: test byte [flag], 1; jz spin; xor eax, eax; ret; moved: mov eax, 1; ret`.
struct SpinCode {
  std::uintptr_t spin_lo = 0, spin_hi = 0, moved = 0;
};

void move_spinner(ucontext_t* context, void* arg) {
  auto* code = static_cast<SpinCode*>(arg);
  auto& rip = context->uc_mcontext.gregs[REG_RIP];
  if (static_cast<std::uintptr_t>(rip) >= code->spin_lo && static_cast<std::uintptr_t>(rip) < code->spin_hi)
    rip = static_cast<greg_t>(code->moved);
}

TEST(VisitOtherThreads, VisitorCanMoveTheThreadItVisits) {
  auto heap = CodeHeap::global();
  ASSERT_TRUE(heap) << heap.error().describe();
  Jit jit(**heap);
  static std::atomic<std::uint8_t> release{0};
  release = 0;
  using namespace asmjit;
  CodeHolder holder;
  holder.init(Jit::environment());
  x86::Assembler a(&holder);
  Label spin = a.newLabel(), spin_end = a.newLabel(), moved = a.newLabel();
  a.mov(x86::rcx, imm(reinterpret_cast<std::uint64_t>(&release)));
  a.bind(spin);
  a.test(x86::byte_ptr(x86::rcx), 1);
  a.jz(spin);
  a.bind(spin_end);
  a.xor_(x86::eax, x86::eax);
  a.ret();
  a.bind(moved);
  a.mov(x86::eax, 1);
  a.ret();
  auto fn = jit.add_as<int (*)()>(holder);
  ASSERT_TRUE(fn) << fn.error().describe();
  const auto base = reinterpret_cast<std::uintptr_t>(*fn);
  SpinCode code{base + holder.labelOffset(spin), base + holder.labelOffset(spin_end), base + holder.labelOffset(moved)};

  std::atomic<bool> started{false};
  std::atomic<int> result{-1};
  std::thread spinner([&] {
    started = true;
    result = (*fn)();
  });
  while (!started) std::this_thread::yield();
  // The thread may not have reached the loop yet; visit until it was seen in it.
  for (int round = 0; result.load() == -1 && round < 5000; ++round) {
    auto r = visit_other_threads(move_spinner, &code, 5000ms);
    ASSERT_TRUE(r) << r.error().describe();
    std::this_thread::sleep_for(1ms);
  }
  release = 1;
  spinner.join();
  EXPECT_EQ(result.load(), 1) << "the thread left the loop through the moved rip, not the release flag";
  EXPECT_TRUE(jit.release(reinterpret_cast<void*>(*fn)));
}

TEST(VisitOtherThreads, ThreadWithSignalsBlockedIsReportedAndLateSignalIsHarmless) {
  std::atomic<pid_t> tid{0};
  std::atomic<bool> unblock{false}, stop{false};
  std::thread blocked([&] {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    tid = ::gettid();
    while (!unblock) std::this_thread::yield();
    pthread_sigmask(SIG_UNBLOCK, &all, nullptr);  // The stale signal arrives here.
    while (!stop) std::this_thread::yield();
  });
  while (tid == 0) std::this_thread::yield();
  Visits visits;
  auto r = visit_other_threads(record_visit, &visits, 200ms);
  ASSERT_TRUE(r) << r.error().describe();
  ASSERT_EQ(r->unanswered.size(), 1u);
  EXPECT_EQ(r->unanswered[0], tid.load());
  const int visited_before = visits.count.load();

  unblock = true;
  // Once unblocked it answers new rendezvous; the late signal did not run the old visitor.
  Visits again;
  auto r2 = visit_other_threads(record_visit, &again, 5000ms);
  ASSERT_TRUE(r2) << r2.error().describe();
  EXPECT_TRUE(r2->unanswered.empty());
  EXPECT_EQ(visits.count.load(), visited_before);
  stop = true;
  blocked.join();
}

TEST(VisitOtherThreads, ThreadsStartingAndExitingDoNotBreakIt) {
  std::atomic<bool> stop{false};
  std::thread churn([&] {
    while (!stop) std::thread([] {}).join();
  });
  for (int i = 0; i < 100; ++i) {
    Visits visits;
    auto r = visit_other_threads(record_visit, &visits, 5000ms);
    ASSERT_TRUE(r) << r.error().describe();
    EXPECT_TRUE(r->unanswered.empty());
  }
  stop = true;
  churn.join();
}

TEST(VisitOtherThreads, NullVisitorIsRefused) {
  auto r = visit_other_threads(nullptr, nullptr, 10ms);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
}

TEST(BlockedSyscallAddress, PointsJustAfterTheSyscallInstruction) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  std::atomic<pid_t> tid{0};
  std::thread reader([&] {
    tid = ::gettid();
    char c;
    (void)!::read(fds[0], &c, 1);
  });
  while (tid == 0) std::this_thread::yield();
  Result<std::uintptr_t> pc = fail(ErrorCode::kUnprovable, "not yet");
  while (!(pc = blocked_syscall_address(tid))) std::this_thread::sleep_for(1ms);  // Until it blocks in read().
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(*pc);
  EXPECT_EQ(bytes[-2], 0x0F);
  EXPECT_EQ(bytes[-1], 0x05);  // syscall
  (void)!::write(fds[1], "x", 1);
  reader.join();
  ::close(fds[0]);
  ::close(fds[1]);

  test::BusyThread spinning;  // Running in user space, not blocked anywhere.
  auto running = blocked_syscall_address(spinning.tid());
  ASSERT_FALSE(running);
  EXPECT_EQ(running.error().code, ErrorCode::kUnprovable);
}

}  // namespace
}  // namespace punch::runtime
