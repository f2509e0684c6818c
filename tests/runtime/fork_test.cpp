// fork and exec: a child reopens /proc/self/mem (the inherited descriptor
// names the parent's memory), its locks and sync work, and the descriptor
// does not survive exec. A raw clone() child (no atfork handlers run) is a
// fork child too; a CLONE_VM child shares the memory and the descriptor.
#include <asmjit/x86.h>
#include <gtest/gtest.h>
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <signal.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include <punch/runtime/fault_injection.hpp>
#include <punch/runtime/fork_safe_mutex.hpp>
#include <punch/runtime/jit.hpp>
#include <punch/runtime/sync.hpp>
#include <punch/runtime/threads.hpp>

#include "child_process.hpp"
#include "memory_snapshot.hpp"
#include "sanitizer.hpp"

namespace punch::runtime {
namespace {

// int f() { return value; }
void emit_return(asmjit::CodeHolder& code, int value) {
  code.init(Jit::environment());
  asmjit::x86::Assembler a(&code);
  a.mov(asmjit::x86::eax, value);
  a.ret();
}

CodeHeap& global_heap() {
  auto heap = CodeHeap::global();
  EXPECT_TRUE(heap) << heap.error().describe();
  return **heap;
}

// `int f() { return 1; }` added through `jit`: its writer's descriptor is open from then on.
Result<int (*)()> add_return_one(Jit& jit) {
  asmjit::CodeHolder code;
  emit_return(code, 1);
  return jit.add_as<int (*)()>(code);
}

const std::uint8_t kRet1[] = {0xB8, 1, 0, 0, 0, 0xC3};  // mov eax, 1; ret
const std::uint8_t kRet2[] = {0xB8, 2, 0, 0, 0, 0xC3};  // mov eax, 2; ret

// A child process (fork, raw clone, vfork) writing through the parent's
// proc-mem writer: `fn`, `int f() { return 1; }`, is the code it writes, and
// is released after the test. Only proc-mem holds a /proc/self/mem
// descriptor, which is what these hazards are about.
class ForkWrite : public ::testing::Test {
 protected:
  void SetUp() override {
    if (heap.writer().method() != WriteMethod::kProcMem) GTEST_SKIP() << "the hazard is specific to proc-mem";
    auto added = add_return_one(jit);
    ASSERT_TRUE(added) << added.error().describe();
    fn = *added;
  }
  void TearDown() override {
    if (fn) {
      EXPECT_TRUE(jit.release(reinterpret_cast<void*>(fn)));
    }
  }

  CodeHeap& heap = global_heap();
  Jit jit{heap};
  int (*fn)() = nullptr;
};

TEST_F(ForkWrite, ChildPatchesItsOwnCopyAndLeavesTheParentsBytesAlone) {
  test::MemorySnapshot parent_bytes(reinterpret_cast<const void*>(fn), 6);

  auto child = test::run_in_child([&]() -> int {
    if (auto ok = heap.writer().write(reinterpret_cast<std::uintptr_t>(fn), kRet2); !ok) {
      std::printf("child write: %s\n", ok.error().describe().c_str());
      return 2;
    }
    if (auto ok = sync_all_threads(); !ok) return 3;
    if (fn() != 2) return 4;
    asmjit::CodeHolder more;
    emit_return(more, 7);
    auto g = jit.add_as<int (*)()>(more);
    if (!g) {
      std::printf("child jit: %s\n", g.error().describe().c_str());
      return 5;
    }
    return (*g)() == 7 ? 0 : 6;
  });
  EXPECT_EQ(child.exit_code, 0) << child.describe();
  EXPECT_EQ(parent_bytes.differences(), "");
  EXPECT_EQ(fn(), 1);
}

// Runs `body` in a child made by glibc's clone() with `flags` (no atfork
// handler runs, unlike fork()) on a stack of its own; returns its exit code,
// or -1 when it did not exit normally.
int run_in_clone(int flags, int (*body)(void*), void* arg) {
  constexpr std::size_t kStack = 256 * 1024;
  void* stack = ::mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (stack == MAP_FAILED) return -1;
  std::fflush(nullptr);
  const pid_t pid = ::clone(body, static_cast<char*>(stack) + kStack, flags | SIGCHLD, arg);
  int status = 0;
  while (pid > 0 && ::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  ::munmap(stack, kStack);
  return pid > 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

struct CloneArg {
  CodeWriter* writer;
  int (*fn)();
};

// Writes `mov eax, 2; ret` over fn, runs it; exits (never returns into the parent's frames).
int write_ret2_and_call(void* p) {
  auto* arg = static_cast<CloneArg*>(p);
  if (!arg->writer->write(reinterpret_cast<std::uintptr_t>(arg->fn), kRet2)) ::_exit(2);
  if (!sync_all_threads()) ::_exit(3);
  ::_exit(arg->fn() == 2 ? 0 : 4);
}

TEST_F(ForkWrite, RawCloneChildPatchesItsOwnCopyAndLeavesTheParentsBytesAlone) {
  test::MemorySnapshot parent_bytes(reinterpret_cast<const void*>(fn), 6);
  CloneArg arg{&heap.writer(), fn};
  EXPECT_EQ(run_in_clone(0, write_ret2_and_call, &arg), 0);
  EXPECT_EQ(parent_bytes.differences(), "") << "the clone child wrote the parent's memory";
  EXPECT_EQ(fn(), 1);
}

int write_ret2(void* p) {
  auto* arg = static_cast<CloneArg*>(p);
  ::_exit(arg->writer->write(reinterpret_cast<std::uintptr_t>(arg->fn), kRet2) ? 0 : 2);
}

// A vfork child shares the memory: its write is the parent's, through the
// parent's descriptor, and it must not leave the parent a descriptor number
// that only the child had open (the parent would later use, or close, whatever
// file it opened under that number).
TEST_F(ForkWrite, VforkChildWritesTheSharedMemoryAndLeavesTheParentsDescriptorsAlone) {
#ifdef PUNCH_ASAN
  GTEST_SKIP() << "a CLONE_VM child's instrumented frames leave ASan's shadow memory, shared with this "
                  "process, poisoned for later tests (seen here); the g++ build runs this test";
#endif
  CloneArg arg{&heap.writer(), fn};
  ASSERT_EQ(run_in_clone(CLONE_VM | CLONE_VFORK, write_ret2, &arg), 0);
  ASSERT_TRUE(sync_all_threads());
  EXPECT_EQ(fn(), 2) << "the child's write went to the shared memory";

  // The lowest free number: the one the child would have opened a descriptor under.
  const int file = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(file, 0);
  EXPECT_TRUE(heap.writer().write(reinterpret_cast<std::uintptr_t>(fn), kRet1));
  EXPECT_NE(::fcntl(file, F_GETFD), -1) << "the writer closed the parent's descriptor " << file;
  ASSERT_TRUE(sync_all_threads());
  EXPECT_EQ(fn(), 1);
  ::close(file);
}

bool holds_proc_mem_descriptor() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (!dir) return false;
  bool found = false;
  while (dirent* entry = ::readdir(dir)) {
    char target[256] = {};
    std::string link = std::string("/proc/self/fd/") + entry->d_name;
    ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
    if (n > 4 && std::string(target, static_cast<std::size_t>(n)).ends_with("/mem")) found = true;
  }
  ::closedir(dir);
  return found;
}

TEST(Fork, DescriptorIsCloseOnExec) {
  CodeHeap& heap = global_heap();
  if (heap.writer().method() != WriteMethod::kProcMem) GTEST_SKIP() << "only proc-mem holds the descriptor";
  ASSERT_TRUE(heap.allocate(16));  // The descriptor is open.
  ASSERT_TRUE(holds_proc_mem_descriptor()) << "control: this process holds the descriptor";
  auto exec = test::run_in_child([] {
    ::execl("/bin/ls", "ls", "-l", "/proc/self/fd/", static_cast<char*>(nullptr));
    std::perror("execl");
    return 127;
  });
  ASSERT_EQ(exec.exit_code, 0) << exec.describe();
  EXPECT_NE(exec.output.find("->"), std::string::npos) << exec.output;  // The listing worked.
  EXPECT_EQ(exec.output.find("/mem"), std::string::npos) << exec.output;
}

TEST(Fork, ChildCanEmitWhileParentThreadsHeldTheLocksAtFork) {
#ifdef PUNCH_ASAN
  GTEST_SKIP() << "clang 14's ASan allocator is not fork-safe: a child forked while another thread is in "
                  "malloc deadlocks inside asan_malloc (seen here), whatever punch does; the g++ build runs this test";
#endif
  CodeHeap& heap = global_heap();
  Jit jit(heap);
  std::atomic<bool> stop{false};
  // Another thread keeps taking the heap, writer and rendezvous locks while we fork.
  std::thread busy([&] {
    while (!stop) {
      asmjit::CodeHolder code;
      emit_return(code, 3);
      if (auto fn = jit.add(code)) (void)jit.release(*fn);
    }
  });
  for (int i = 0; i < 20; ++i) {
    auto child = test::run_in_child([&]() -> int {
      asmjit::CodeHolder code;
      emit_return(code, 40 + i);
      auto fn = jit.add_as<int (*)()>(code);
      if (!fn) {
        std::printf("%s\n", fn.error().describe().c_str());
        return 2;
      }
      if ((*fn)() != 40 + i) return 3;
      auto r = visit_other_threads([](ucontext_t*, void*) {}, nullptr, std::chrono::milliseconds(2000));
      if (!r || !r->unanswered.empty()) return 4;
      return jit.release(reinterpret_cast<void*>(*fn)) ? 0 : 5;
    });
    ASSERT_EQ(child.exit_code, 0) << "fork " << i << ": " << child.describe();
  }
  stop = true;
  busy.join();
}

// A thread holding one of punch's locks creates another (as the global
// CodeWriter is created on first use, inside a hook's commit) while a second
// thread forks: the fork waits for the held lock, but must not hold up the
// new lock's registration meanwhile, or neither thread ever goes on. Run in a
// child with an alarm, so that a deadlock fails the test instead of hanging it.
TEST(Fork, ALockCreatedWhileAnotherIsHeldDoesNotDeadlockAFork) {
  auto outcome = test::run_in_child([]() -> int {
    ::alarm(20);
    ForkSafeMutex held(LockRank{0});
    held.lock();
    std::atomic<bool> forking{false};
    int child_status = -1;
    std::thread forker([&] {
      forking = true;
      const pid_t pid = ::fork();  // Its prepare handler waits for `held`.
      if (pid == 0) ::_exit(0);
      if (pid > 0) ::waitpid(pid, &child_status, 0);
    });
    while (!forking) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));        // The fork is in its prepare handler by now.
    auto created = std::make_unique<ForkSafeMutex>(LockRank::kWriter);  // Registers: needs the registry.
    held.unlock();
    forker.join();
    created.reset();
    CHILD_CHECK(WIFEXITED(child_status) && WEXITSTATUS(child_status) == 0, "fork child status %d", child_status);
    return 0;
  });
  EXPECT_EQ(outcome.exit_code, 0) << outcome.describe();
}

// A tool asks, when it is first turned on, for a callback in every fork child
// (its own file there): the child runs it once however often it was asked,
// after the child's locks are free, and the parent never runs it.
std::atomic<int> g_fork_child_callback_runs{0};
ForkSafeMutex* g_fork_child_callback_lock = nullptr;

void fork_child_callback() {
  if (!g_fork_child_callback_lock->try_lock()) return;
  g_fork_child_callback_lock->unlock();
  ++g_fork_child_callback_runs;
}

TEST(Fork, AChildRunsEachForkCallbackOnceWithItsLocksFree) {
  auto outcome = test::run_in_child([]() -> int {
    ::alarm(20);
    ForkSafeMutex lock(LockRank{25});
    g_fork_child_callback_lock = &lock;
    CHILD_CHECK(run_in_fork_children(fork_child_callback), "no slot for the callback");
    CHILD_CHECK(run_in_fork_children(fork_child_callback), "asked again: refused");
    int child_status = -1;
    const pid_t pid = ::fork();  // The prepare handler takes `lock`; the child's callback finds it free.
    if (pid == 0) ::_exit(g_fork_child_callback_runs == 1 ? 0 : 1);
    CHILD_CHECK(pid > 0 && ::waitpid(pid, &child_status, 0) == pid, "fork failed");
    CHILD_CHECK(WIFEXITED(child_status) && WEXITSTATUS(child_status) == 0, "fork child status %d", child_status);
    CHILD_CHECK(g_fork_child_callback_runs == 0, "the parent ran a child callback");
    return 0;
  });
  EXPECT_EQ(outcome.exit_code, 0) << outcome.describe();
}

// A thread that forks with every signal blocked, while a lock its fork
// handler needs is taken, waits in punch's handler and cannot answer a hold
// signal. It counts as held there: the hold succeeds at once, and the thread
// does not leave the handler until the hold is released, even when the lock
// it waits for is free meanwhile. Before, the hold failed after its timeout
// naming that thread (git under punch_trace ran 4.9 times slower).
TEST(Fork, AThreadForkingWithSignalsBlockedCountsAsHeldWhileItWaitsForPunch) {
  auto outcome = test::run_in_child([]() -> int {
    ::alarm(20);
    ForkSafeMutex taken(LockRank{0});
    taken.lock();
    std::atomic<pid_t> forker_tid{0};
    std::atomic<bool> forked{false};
    int child_status = -1;
    std::thread forker([&] {
      sigset_t all;
      sigfillset(&all);
      pthread_sigmask(SIG_BLOCK, &all, nullptr);
      forker_tid = static_cast<pid_t>(::syscall(SYS_gettid));
      const pid_t pid = ::fork();  // Its prepare handler waits for `taken`.
      if (pid == 0) ::_exit(0);
      forked = true;
      if (pid > 0) ::waitpid(pid, &child_status, 0);
    });
    // Until the forker sleeps on a futex: inside the prepare handler.
    for (;;) {
      const pid_t tid = forker_tid.load();
      auto call = tid ? blocked_syscall(tid) : Result<BlockedSyscall>(fail(ErrorCode::kUnprovable, ""));
      if (call && call->number == SYS_futex) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    auto hold = ThreadHold::hold_other_threads(std::chrono::milliseconds(200));
    CHILD_OK(hold);
    CHILD_CHECK(hold->held().empty(), "%zu threads held by a signal", hold->held().size());
    taken.unlock();  // The forker may take it now, but must stay until released.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHILD_CHECK(!forked.load(), "the forking thread left punch's fork handler while it counted as held");
    hold->release();
    forker.join();
    CHILD_CHECK(forked.load());
    CHILD_CHECK(WIFEXITED(child_status) && WEXITSTATUS(child_status) == 0, "fork child status %d", child_status);
    return 0;
  });
  EXPECT_EQ(outcome.exit_code, 0) << outcome.describe();
}

// The process-wide writer and heap are built on first use (choosing the
// write method probes the host), yet a fork while one thread is inside that
// first use leaves the child a whole object: the child's first call returns
// and the heap works there. (A function-local static would leave the child's
// copy of its initialization guard taken by a thread that does not exist
// there, and the child would wait forever.) Runs in a fresh copy of this
// binary, where nothing has used them yet; a child that hangs is killed by
// its alarm. The outcome: 0 passed, 2 failed, kChildSkip when no fork began
// while the first use was under way (timing), which the outer test retries.
TEST(Fork, DISABLED_ForkDuringFirstUseOfTheGlobalHeap) {
  std::atomic<std::uint64_t> started{0}, finished{0};
  auto now = [] { return static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()); };
  // Every write waits 0.2 ms first: the probe's test write keeps the first use
  // under way long enough for this thread to fork during it.
  testing::inject_faults(testing::FaultPoint::kWrite, 1, testing::kEveryOperation, testing::FaultKind::kDelay);
  std::thread first_use([&] {
    started = now();
    (void)CodeHeap::global();
    finished = now();
  });
  while (started.load() == 0) {
  }
  int during = 0, failed = 0;
  while (finished.load() == 0 || during == 0) {
    const std::uint64_t fork_began = now();
    const bool before_end = finished.load() == 0;
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::alarm(5);
      auto heap = CodeHeap::global();
      if (!heap) _exit(3);
      auto block = (*heap)->allocate(16);
      _exit(block && (*heap)->free(*block) ? 0 : 4);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok) {
      std::printf("child forked %s first use ended: %s %d\n", before_end ? "before" : "after",
                  WIFSIGNALED(status) ? "killed by signal" : "exit",
                  WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
      ++failed;
    }
    if (before_end || fork_began < finished.load()) ++during;
    if (finished.load() != 0) break;
  }
  first_use.join();
  testing::clear_faults();
  std::printf("forks begun during first use: %d, failed children: %d (first use took %llu ns)\n", during, failed,
              static_cast<unsigned long long>(finished.load() - started.load()));
  EXPECT_EQ(failed, 0);
  if (during == 0) std::exit(test::kChildSkip);
}

TEST(Fork, ChildOfAForkDuringFirstUseOfTheGlobalHeapCanUseIt) {
#ifdef PUNCH_ASAN
  GTEST_SKIP() << "a child forked while another thread allocates can deadlock inside ASan's allocator";
#endif
  for (int attempt = 0; attempt < 30; ++attempt) {
    auto child = test::run_in_child([] {
      ::execl("/proc/self/exe", "punch_runtime_tests", "--gtest_also_run_disabled_tests",
              "--gtest_filter=Fork.DISABLED_ForkDuringFirstUseOfTheGlobalHeap", static_cast<char*>(nullptr));
      return 127;
    });
    if (child.exit_code == test::kChildSkip) continue;
    EXPECT_EQ(child.exit_code, 0) << child.describe();
    return;
  }
  GTEST_SKIP() << "no fork began while the first use was under way in 30 runs";
}

}  // namespace
}  // namespace punch::runtime
