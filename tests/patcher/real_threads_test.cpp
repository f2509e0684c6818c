// Live changes among threads that behave like real programs' threads: they
// block every signal (xz's workers, glibc's exiting threads, code around
// fork), share memory with a vfork child (posix_spawn), or sleep in poll and
// nanosleep. Each test failed before threads were held still for a change:
// a thread that met a trap byte with SIGTRAP blocked was killed by the
// kernel, and the fix-up signal made sleeping calls fail with EINTR.
//
// Each runs in a child process: a death there is a test failure, not a crash
// of the test binary, and libc hooks stay inside it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include <punch/patcher/hook.hpp>
#include <punch/patcher/transaction.hpp>
#include <punch/runtime/code_heap.hpp>
#include <punch/runtime/jit.hpp>
#include <punch/runtime/threads.hpp>

#include "child_process.hpp"
#include "hook_targets.hpp"
#include "live_test_support.hpp"

extern char** environ;

namespace punch::test {
namespace {

using patcher::Hook;
using patcher::HookOptions;

// Options for a change among threads that may not answer: a refusal comes
// within 5 ms instead of the default second.
HookOptions quick_hook_options() {
  HookOptions options;
  options.transaction.thread_timeout = std::chrono::milliseconds(5);
  return options;
}

void block_every_signal() {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
}

// Installs and removes `hook` of `target` `cycles` times while `keep_going`
// holds. Counts the installs that succeeded; a refusal must be a timeout
// (a thread that could not be held still) and must leave the bytes as they
// were. Returns false (after printing why) on anything else.
bool cycle_hook(
    void* target, void* detour, void** original, int cycles, int& installed,
    const std::function<bool()>& keep_going = [] { return true; }) {
  const auto before = bytes_at(reinterpret_cast<std::uintptr_t>(target), 16);
  for (int i = 0; i < cycles && keep_going(); ++i) {
    HookOptions options = quick_hook_options();
    options.enabled = false;
    auto hook = Hook::install(target, detour, options);
    if (!hook) {
      std::printf("install %d: %s\n", i, hook.error().describe().c_str());
      return false;
    }
    __atomic_store_n(original, hook->trampoline(), __ATOMIC_RELEASE);
    if (auto enabled = hook->enable(); enabled) {
      ++installed;
    } else if (enabled.error().code != ErrorCode::kTimeout) {
      std::printf("enable %d: %s\n", i, enabled.error().describe().c_str());
      return false;
    }
    // Removing is retried (a refusal leaves the hook in place), for 20 s at most.
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (;;) {
      auto removed = hook->remove();
      if (removed) break;
      if (removed.error().code != ErrorCode::kTimeout || std::chrono::steady_clock::now() > give_up) {
        std::printf("remove %d: %s\n", i, removed.error().describe().c_str());
        return false;
      }
    }
    if (bytes_at(reinterpret_cast<std::uintptr_t>(target), 16) != before) {
      std::printf("cycle %d: the target's bytes differ after remove\n", i);
      return false;
    }
  }
  return true;
}

// The status of child `pid` once it ended (waitpid, retried on EINTR).
int wait_status(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

// --- A worker with every signal blocked (for life, as xz's) calls the function being hooked ---

// The hooked target: an assembly prologue of several instructions
// (hook_targets.S, x * x - 1), hookable in every build. Under clang's
// -fsanitize=function a compiled function begins with a jump over a type
// signature instead, and hooks refuse that entry.
void* g_square_original = nullptr;
long square_detour(long x) {
  return reinterpret_cast<long (*)(long)>(__atomic_load_n(&g_square_original, __ATOMIC_ACQUIRE))(x);
}

TEST(BlockedSignals, AWorkerWithEverySignalBlockedIsNeverKilledByAHookCycle) {
  auto outcome = run_in_child([]() -> int {
    std::mutex m;
    std::condition_variable cv;
    std::uint64_t go = 0;
    bool stop = false;
    std::atomic<std::uint64_t> calls{0}, wrong{0};
    std::atomic<bool> blocked{false};
    // Like xz's workers: every signal blocked for life; it computes a batch,
    // then waits for the next one from the main thread.
    std::thread worker([&] {
      block_every_signal();
      blocked = true;
      std::uint64_t seen = 0;
      for (;;) {
        for (int k = 0; k < 2000; ++k) {
          if (patcher::call(hook_target_square, k) != static_cast<long>(k) * k - 1) wrong.fetch_add(1);
          calls.fetch_add(1, std::memory_order_relaxed);
        }
        std::unique_lock lock(m);
        cv.wait(lock, [&] { return go != seen || stop; });
        if (stop) return;
        seen = go;
      }
    });
    while (!blocked.load()) std::this_thread::yield();  // A hook installed before would stay until it exits.
    int installed = 0;
    bool ok = true;
    for (int i = 0; i < 2000 && ok; ++i) {
      ok = cycle_hook(reinterpret_cast<void*>(&hook_target_square), reinterpret_cast<void*>(&square_detour),
                      &g_square_original, 1, installed);
      {
        std::lock_guard lock(m);
        ++go;
      }
      cv.notify_one();
    }
    {
      std::lock_guard lock(m);
      stop = true;
    }
    cv.notify_one();
    worker.join();
    CHILD_CHECK(ok);
    CHILD_CHECK(wrong.load() == 0, "%llu wrong results", static_cast<unsigned long long>(wrong.load()));
    // A thread with every signal blocked can be held neither running nor
    // asleep, so changes are refused while it lives (memory unchanged, checked
    // by cycle_hook); once it is gone, the same hook cycle works.
    int after = 0;
    CHILD_CHECK(cycle_hook(reinterpret_cast<void*>(&hook_target_square), reinterpret_cast<void*>(&square_detour),
                           &g_square_original, 1, after));
    CHILD_CHECK(after == 1, "the hook cycle failed with the worker gone");
    std::printf("calls=%llu installed=%d of 2000\n", static_cast<unsigned long long>(calls.load()), installed);
    return 0;
  });
  EXPECT_CHILD_OK(outcome);
  EXPECT_EQ(outcome.signal, 0) << outcome.describe();
}

// --- Detached threads exit (glibc frees their resources with every signal blocked) while free is hooked ---

void* g_free_original = nullptr;
std::atomic<std::uint64_t> g_frees{0};
void free_detour(void* p) {
  g_frees.fetch_add(1, std::memory_order_relaxed);
  reinterpret_cast<void (*)(void*)>(__atomic_load_n(&g_free_original, __ATOMIC_ACQUIRE))(p);
}

TEST(BlockedSignals, DetachedThreadsExitingWhileFreeIsHookedAndUnhooked) {
  auto outcome = run_in_child([]() -> int {
    auto free_address = patcher::resolve_symbol({"free", "", "libc.so.6"});
    CHILD_OK(free_address);
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> exited{0};
    std::thread spawner([&] {
      while (!stop.load()) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_t t;
        auto body = [](void* arg) -> void* {
          void* p = std::malloc(64 + (reinterpret_cast<std::uintptr_t>(arg) & 255));
          std::free(p);
          static_cast<std::atomic<std::uint64_t>*>(arg)->fetch_add(1);
          return nullptr;
        };
        if (pthread_create(&t, &attr, body, &exited) != 0) std::this_thread::yield();
        pthread_attr_destroy(&attr);
      }
    });
    int installed = 0;
    const bool ok = cycle_hook(*free_address, reinterpret_cast<void*>(&free_detour), &g_free_original, 300, installed);
    stop = true;
    spawner.join();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // Let the last detached threads exit.
    CHILD_CHECK(ok);
    CHILD_CHECK(installed > 0, "free was never hooked");
    CHILD_CHECK(exited.load() > 100, "only %llu threads ran", static_cast<unsigned long long>(exited.load()));
    std::printf("threads=%llu installed=%d of 300 frees seen by the detour=%llu\n",
                static_cast<unsigned long long>(exited.load()), installed,
                static_cast<unsigned long long>(g_frees.load()));
    return 0;
  });
  EXPECT_CHILD_OK(outcome);
  EXPECT_EQ(outcome.signal, 0) << outcome.describe();
}

// --- posix_spawn: the vfork child runs in this memory with default handlers and calls execve ---

void* g_execve_original = nullptr;
int execve_detour(const char* path, char* const argv[], char* const envp[]) {
  return reinterpret_cast<int (*)(const char*, char* const[], char* const[])>(
      __atomic_load_n(&g_execve_original, __ATOMIC_ACQUIRE))(path, argv, envp);
}

TEST(BlockedSignals, PosixSpawnChildrenSurviveExecveBeingHookedAndUnhooked) {
  auto outcome = run_in_child([]() -> int {
    auto execve_address = patcher::resolve_symbol({"execve", "", "libc.so.6"});
    CHILD_OK(execve_address);
    std::atomic<bool> done{false};
    std::atomic<int> spawned{0}, killed{0}, failed{0};
    std::thread spawner([&] {
      char arg0[] = "true";
      char* argv[] = {arg0, nullptr};
      for (int i = 0; i < 3000; ++i) {
        pid_t pid = 0;
        if (posix_spawn(&pid, "/bin/true", nullptr, nullptr, argv, environ) != 0) {
          failed.fetch_add(1);
          continue;
        }
        const int status = wait_status(pid);
        if (WIFSIGNALED(status))
          killed.fetch_add(1);
        else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
          failed.fetch_add(1);
        spawned.fetch_add(1);
      }
      done = true;
    });
    int installed = 0;
    const bool ok = cycle_hook(*execve_address, reinterpret_cast<void*>(&execve_detour), &g_execve_original, 100000,
                               installed, [&] { return !done.load(); });
    spawner.join();
    CHILD_CHECK(ok);
    CHILD_CHECK(killed.load() == 0, "%d of %d children killed by a signal", killed.load(), spawned.load());
    CHILD_CHECK(failed.load() == 0, "%d spawns failed", failed.load());
    CHILD_CHECK(installed > 0, "execve was never hooked");
    std::printf("spawned=%d installed=%d\n", spawned.load(), installed);
    return 0;
  });
  EXPECT_CHILD_OK(outcome);
  EXPECT_EQ(outcome.signal, 0) << outcome.describe();
}

// --- A thread calls execve while another thread changes code (a server re-executing itself) ---

// A signal sent to a thread that is already inside execve stays pending into
// the new program, where its handler is gone: the new program must not die of it.
TEST(ExecFromAThread, TheNewProgramNeverDiesOfAPendingHoldSignal) {
  auto outcome = run_in_child([]() -> int {
    constexpr int kRuns = 200;
    int killed = 0, failed = 0, last_signal = 0;
    // One cycle here first: each run's process inherits what it built (the
    // object's branch index, its symbol tables), which under ASan took most
    // of a second per run to build again.
    int warm = 0;
    CHILD_CHECK(cycle_hook(reinterpret_cast<void*>(&hook_target_square), reinterpret_cast<void*>(&square_detour),
                           &g_square_original, 1, warm));
    for (int run = 0; run < kRuns; ++run) {
      const pid_t pid = fork();
      if (pid == 0) {
        static std::atomic<int> cycles{0};
        static std::atomic<bool> cycling_ended{false};
        std::thread cycler([] {
          int installed = 0;
          cycle_hook(reinterpret_cast<void*>(&hook_target_square), reinterpret_cast<void*>(&square_detour),
                     &g_square_original, 1000000, installed, [] { return cycles.fetch_add(1) >= 0; });
          cycling_ended = true;  // A failed cycle (printed) must not leave the main thread spinning.
        });
        cycler.detach();
        // Runs (so it is held by every change) until hooks are cycling, then
        // execs at a different moment of a cycle each run.
        while (cycles.load() < 3 && !cycling_ended.load()) {
        }
        if (cycling_ended.load()) _exit(4);
        const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(37 * run % 500);
        while (std::chrono::steady_clock::now() < until) {
        }
        char arg0[] = "true";
        char* argv[] = {arg0, nullptr};
        ::execve("/bin/true", argv, environ);
        _exit(3);
      }
      const int status = wait_status(pid);
      if (WIFSIGNALED(status)) {
        ++killed;
        last_signal = WTERMSIG(status);
      } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        ++failed;
      }
    }
    CHILD_CHECK(killed == 0, "%d of %d new programs killed by a signal (last: %d)", killed, kRuns, last_signal);
    CHILD_CHECK(failed == 0, "%d of %d runs failed", failed, kRuns);
    return 0;
  });
  EXPECT_CHILD_OK(outcome);
  EXPECT_EQ(outcome.signal, 0) << outcome.describe();
}

// --- fork with every signal blocked (the atfork handlers run then) while malloc is hooked ---

void* g_malloc_original = nullptr;
void* malloc_detour(std::size_t n) {
  return reinterpret_cast<void* (*)(std::size_t)>(__atomic_load_n(&g_malloc_original, __ATOMIC_ACQUIRE))(n);
}

TEST(BlockedSignals, ForkWithEverySignalBlockedWhileMallocIsHookedAndUnhooked) {
  auto outcome = run_in_child([]() -> int {
    auto malloc_address = patcher::resolve_symbol({"malloc", "", "libc.so.6"});
    CHILD_OK(malloc_address);
    std::atomic<bool> done{false};
    std::atomic<int> forks{0}, bad{0};
    std::thread forker([&] {
      for (int i = 0; i < 500; ++i) {
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        const pid_t pid = fork();
        if (pid == 0) _exit(std::malloc(16) ? 0 : 3);
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
        const int status = pid > 0 ? wait_status(pid) : 0;
        if (pid < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) bad.fetch_add(1);
        forks.fetch_add(1);
      }
      done = true;
    });
    int installed = 0;
    const bool ok = cycle_hook(*malloc_address, reinterpret_cast<void*>(&malloc_detour), &g_malloc_original, 100000,
                               installed, [&] { return !done.load(); });
    forker.join();
    CHILD_CHECK(ok);
    CHILD_CHECK(bad.load() == 0, "%d of %d forks went wrong", bad.load(), forks.load());
    CHILD_CHECK(installed > 0, "malloc was never hooked");
    std::printf("forks=%d installed=%d\n", forks.load(), installed);
    return 0;
  });
  EXPECT_CHILD_OK(outcome);
  EXPECT_EQ(outcome.signal, 0) << outcome.describe();
}

// --- Threads asleep in poll, nanosleep, select and epoll-like waits see no EINTR ---

TEST(SleepingThreads, NoSleepingCallFailsWithEintrAcrossHookCycles) {
  auto outcome = run_in_child([]() -> int {
    int pipe_fds[2];
    CHILD_CHECK(::pipe(pipe_fds) == 0);
    std::atomic<bool> stop{false};
    std::atomic<int> eintr{0}, woke{0};
    std::vector<std::thread> sleepers;
    sleepers.emplace_back([&] {  // poll on a pipe nobody writes until the end.
      pollfd p{pipe_fds[0], POLLIN, 0};
      while (!stop.load()) {
        if (::poll(&p, 1, 10000) < 0 && errno == EINTR) eintr.fetch_add(1);
        woke.fetch_add(1);
      }
    });
    sleepers.emplace_back([&] {  // nanosleep, half a second at a time.
      while (!stop.load()) {
        timespec ts{0, 500'000'000};
        if (::nanosleep(&ts, nullptr) < 0 && errno == EINTR) eintr.fetch_add(1);
      }
    });
    sleepers.emplace_back([&] {  // select on the same pipe.
      while (!stop.load()) {
        fd_set set;
        FD_ZERO(&set);
        FD_SET(pipe_fds[0], &set);
        timeval tv{10, 0};
        if (::select(pipe_fds[0] + 1, &set, nullptr, nullptr, &tv) < 0 && errno == EINTR) eintr.fetch_add(1);
      }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // All three asleep.

    // A stolen-bytes hook over a prologue of several instructions (its
    // install needs the fix-up round) and the release of its trampolines (a
    // rendezvous of its own), 20 times.
    int installed = 0;
    bool ok = true;
    for (int i = 0; i < 20 && ok; ++i) {
      ok = cycle_hook(reinterpret_cast<void*>(&hook_target_square), reinterpret_cast<void*>(&square_detour),
                      &g_square_original, 1, installed);
      if (auto released = patcher::release_retired_hook_code(); !released) {
        std::printf("release: %s\n", released.error().describe().c_str());
        ok = false;
      }
      if (auto reclaimed = patcher::reclaim_retired_copies(); !reclaimed) {
        std::printf("reclaim: %s\n", reclaimed.error().describe().c_str());
        ok = false;
      }
    }
    const patcher::LiveStats stats = patcher::live_stats();
    stop = true;
    CHILD_CHECK(::write(pipe_fds[1], "x", 1) == 1);  // Wake poll and select.
    for (auto& t : sleepers) t.join();
    CHILD_CHECK(ok);
    CHILD_CHECK(installed == 20, "%d of 20 installs", installed);
    CHILD_CHECK(eintr.load() == 0, "%d sleeping calls failed with EINTR", eintr.load());
    CHILD_CHECK(stats.fixup_rounds > 0, "no fix-up round ran: the test did not test it");
    return 0;
  });
  EXPECT_CHILD_OK(outcome);
}

// Threads with every signal blocked, asleep in poll, or in ppoll with a mask
// that lets signals in while it waits: a tripwire over the resume address
// would kill either when it wakes (a trap it has blocked then), so both are
// left unguarded, as before tripwires. One that wakes during a change is held
// by a signal it cannot take, and that change fails cleanly instead.
TEST(SleepingThreads, ASleeperThatReturnsWithTheTrapSignalBlockedGetsNoTripwire) {
  auto outcome = run_in_child([]() -> int {
    int pipe_fds[2];
    CHILD_CHECK(::pipe(pipe_fds) == 0);
    std::atomic<bool> stop{false};
    std::atomic<int> woke{0};
    std::vector<std::thread> sleepers;
    sleepers.emplace_back([&] {
      block_every_signal();
      pollfd p{pipe_fds[0], POLLIN, 0};
      while (!stop.load()) {
        ::poll(&p, 1, 1);
        woke.fetch_add(1);
      }
    });
    sleepers.emplace_back([&] {
      block_every_signal();
      pollfd p{pipe_fds[0], POLLIN, 0};
      sigset_t none;
      sigemptyset(&none);
      while (!stop.load()) {
        timespec ms{0, 1'000'000};
        ::ppoll(&p, 1, &ms, &none);
        woke.fetch_add(1);
      }
    });
    while (woke.load() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    int installed = 0;
    const bool ok = cycle_hook(reinterpret_cast<void*>(&hook_target_square), reinterpret_cast<void*>(&square_detour),
                               &g_square_original, 30, installed);
    stop = true;
    for (auto& t : sleepers) t.join();
    std::printf("installed=%d woke=%d\n", installed, woke.load());
    CHILD_CHECK(ok);
    CHILD_CHECK(installed > 0, "the hook never installed");
    return 0;
  });
  EXPECT_CHILD_OK(outcome);
  EXPECT_EQ(outcome.signal, 0) << outcome.describe();
}

// The holder may meet a tripwire itself: here a sleeper sleeps in nanosleep
// and the holder's slowed syncs sleep through the same libc code. It must
// not wait for its own release: it takes that tripwire away and goes on
// (the sleeper is unguarded for the rest of that change, as before tripwires).
TEST(SleepingThreads, TheHolderMeetingATripwireTakesItAwayAndGoesOn) {
  auto outcome = run_in_child([]() -> int {
    std::atomic<bool> stop{false};
    std::atomic<int> eintr{0}, woke{0};
    std::thread sleeper([&] {
      while (!stop.load()) {
        timespec ms{0, 1'000'000};
        if (::nanosleep(&ms, nullptr) < 0 && errno == EINTR) eintr.fetch_add(1);
        woke.fetch_add(1);
      }
    });
    while (woke.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    const patcher::LiveStats before = patcher::live_stats();
    int installed = 0;
    bool ok = true;
    {
      SlowSyncs slow;
      for (int i = 0; i < 200 && ok; ++i) {
        ok = cycle_hook(reinterpret_cast<void*>(&hook_target_square), reinterpret_cast<void*>(&square_detour),
                        &g_square_original, 1, installed);
        if (patcher::live_stats().tripwires_taken_away - before.tripwires_taken_away >= 5) break;
      }
    }
    const std::uint64_t taken = patcher::live_stats().tripwires_taken_away - before.tripwires_taken_away;
    stop = true;
    sleeper.join();
    std::printf("installed=%d taken_away=%llu eintr=%d\n", installed, static_cast<unsigned long long>(taken),
                eintr.load());
    CHILD_CHECK(ok);
    CHILD_CHECK(taken > 0, "the holder never met a tripwire: the test did not test it");
    return 0;
  });
  EXPECT_CHILD_OK(outcome);
  EXPECT_EQ(outcome.signal, 0) << outcome.describe();
}

// Python's subprocess in miniature: a thread left asleep in poll wakes while
// a hook changes (its 1 ms timeout), blocks every signal and vforks; the
// child resets its handlers to the default, as _posixsubprocess does, and
// calls the function being hooked before it exits. A child that met a trap
// byte died of SIGTRAP (real_programs: python_subprocess). The tripwire over
// the sleeper's resume address holds it from waking until the change is done.
TEST(SleepingThreads, AVforkChildOfASleeperWokenDuringAChangeMeetsNoTrapByte) {
  auto outcome = run_in_child([]() -> int {
    int pipe_fds[2];
    CHILD_CHECK(::pipe(pipe_fds) == 0);
    std::atomic<bool> stop{false};
    std::atomic<int> children{0}, killed{0}, wrong{0}, eintr{0};
    std::thread sleeper([&] {
      pollfd p{pipe_fds[0], POLLIN, 0};
      long (*volatile square)(long) = hook_target_square;
      while (!stop.load()) {
        if (::poll(&p, 1, 1) < 0 && errno == EINTR) eintr.fetch_add(1);
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        const pid_t pid = ::vfork();
        if (pid == 0) {
          struct sigaction dfl {};
          dfl.sa_handler = SIG_DFL;
          ::sigaction(SIGTRAP, &dfl, nullptr);
          ::sigaction(SIGSEGV, &dfl, nullptr);
          ::sigprocmask(SIG_SETMASK, &old, nullptr);
          ::_exit(square(3) == 8 ? 0 : 1);
        }
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
        int status = 0;
        if (pid > 0 && ::waitpid(pid, &status, 0) == pid) {
          children.fetch_add(1);
          if (WIFSIGNALED(status)) killed.fetch_add(1);
          if (WIFEXITED(status) && WEXITSTATUS(status) != 0) wrong.fetch_add(1);
        }
      }
    });
    while (children.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));

    // Slow syncs keep each change under way for a millisecond or so.
    const patcher::LiveStats before = patcher::live_stats();
    int installed = 0;
    bool ok = true;
    {
      SlowSyncs slow;
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      for (int i = 0; i < 1000 && ok && std::chrono::steady_clock::now() < give_up; ++i) {
        ok = cycle_hook(reinterpret_cast<void*>(&hook_target_square), reinterpret_cast<void*>(&square_detour),
                        &g_square_original, 1, installed);
        if (i >= 100 && patcher::live_stats().sleepers_caught - before.sleepers_caught >= 20) break;
      }
    }
    const std::uint64_t caught = patcher::live_stats().sleepers_caught - before.sleepers_caught;
    stop = true;
    sleeper.join();
    std::printf("children=%d installed=%d sleepers_caught=%llu eintr=%d\n", children.load(), installed,
                static_cast<unsigned long long>(caught), eintr.load());
    CHILD_CHECK(ok);
    CHILD_CHECK(killed.load() == 0, "%d of %d vfork children were killed by a signal", killed.load(), children.load());
    CHILD_CHECK(wrong.load() == 0, "%d vfork children computed a wrong result", wrong.load());
    // Not checked: eintr. Polling every millisecond, the thread is often seen
    // running and then enters poll before the hold's signal lands, which then
    // fails with EINTR as it would from any signal (docs/design.md). A thread
    // left asleep is never signalled: NoSleepingCallFailsWithEintr... checks that.
    CHILD_CHECK(caught > 0, "the sleeper never woke during a change: the test did not test it");
    return 0;
  });
  EXPECT_CHILD_OK(outcome);
  EXPECT_EQ(outcome.signal, 0) << outcome.describe();
}

// --- Threads paused inside punch itself ---

// A JIT thread adds and releases code without pause (it holds the code
// heap's lock part of the time) while hooks are installed and removed. A
// change that held it inside CodeHeap::allocate and then allocated its own
// out-of-line copies waited for that lock for ever (seen with gdb). The
// alarm turns such a hang into a failure within a minute.
long (*g_square_typed)(long) = nullptr;
long square_detour_typed(long x) { return __atomic_load_n(&g_square_typed, __ATOMIC_ACQUIRE)(x); }

TEST(ThreadsInsidePunch, AJitThreadHeldInsideTheCodeHeapNeverStallsAChange) {
  auto outcome = run_in_child([]() -> int {
    ::alarm(60);
    auto heap = runtime::CodeHeap::global();
    CHILD_OK(heap);
    std::atomic<long> added{0}, failed{0};
    std::jthread jit_thread([&](std::stop_token stop) {  // Stopped and joined on every return.
      runtime::Jit jit(**heap);
      while (!stop.stop_requested()) {
        asmjit::CodeHolder code;
        code.init(runtime::Jit::environment());
        asmjit::x86::Assembler a(&code);
        a.mov(asmjit::x86::eax, 42);
        a.ret();
        auto f = jit.add_as<int (*)()>(code);
        if (!f || (*f)() != 42 || !jit.release(reinterpret_cast<void*>(*f))) failed.fetch_add(1);
        added.fetch_add(1, std::memory_order_relaxed);
      }
    });
    while (added.load() == 0) std::this_thread::yield();
    // Default options: the JIT thread always answers the hold, so every change must succeed.
    int cycles = 0;
    for (; cycles < 2000; ++cycles) {
      auto hook = Hook::install(&hook_target_square, &square_detour_typed, &g_square_typed);
      CHILD_OK(hook);
      CHILD_OK(hook->remove());
    }
    jit_thread.request_stop();
    jit_thread.join();
    CHILD_CHECK(failed.load() == 0, "%ld of %ld JIT additions failed", failed.load(), added.load());
    std::printf("cycles=%d added=%ld\n", cycles, added.load());
    return 0;
  });
  EXPECT_CHILD_OK(outcome);
  EXPECT_EQ(outcome.signal, 0) << outcome.describe();
}

// A held thread spins a little before it sleeps, and reads the clock while
// it spins. It read it with libc's clock_gettime, which programs hook (to
// fake or to measure time): a change to clock_gettime then ran it under the
// held thread, whose signals are all blocked in the handler, and a trap byte
// there would kill the process. The busy thread is held by every change.
void* g_clock_gettime_original = nullptr;
int clock_gettime_detour(clockid_t clock, timespec* ts) {
  auto* original =
      reinterpret_cast<int (*)(clockid_t, timespec*)>(__atomic_load_n(&g_clock_gettime_original, __ATOMIC_ACQUIRE));
  return original(clock, ts);
}

TEST(ThreadsInsidePunch, AHeldThreadRunsNoneOfTheFunctionsBeingChanged) {
  auto outcome = run_in_child([]() -> int {
    auto target = patcher::resolve_symbol({"clock_gettime", "", "libc.so.6"});
    CHILD_OK(target);
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> spins{0};
    std::thread busy([&] {
      while (!stop.load(std::memory_order_relaxed)) spins.fetch_add(1, std::memory_order_relaxed);
    });
    while (spins.load() == 0) std::this_thread::yield();
    int installed = 0;
    const bool ok =
        cycle_hook(*target, reinterpret_cast<void*>(&clock_gettime_detour), &g_clock_gettime_original, 2000, installed);
    stop = true;
    busy.join();
    CHILD_CHECK(ok);
    CHILD_CHECK(installed > 0, "clock_gettime was never hooked");
    return 0;
  });
  EXPECT_CHILD_OK(outcome);
  EXPECT_EQ(outcome.signal, 0) << outcome.describe();
}

// --- The hold itself ---

TEST(ThreadHold, HeldThreadsRunNothingUntilReleasedAndSleepersAreNotSignalled) {
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> spins{0};
  std::thread runner([&] {
    while (!stop.load(std::memory_order_relaxed)) spins.fetch_add(1, std::memory_order_relaxed);
  });
  std::atomic<int> eintr{0};
  std::thread sleeper([&] {
    timespec ts{0, 300'000'000};
    if (::nanosleep(&ts, nullptr) < 0 && errno == EINTR) eintr.fetch_add(1);
  });
  while (spins.load() == 0) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));

  auto hold = runtime::ThreadHold::hold_other_threads(std::chrono::milliseconds(1000));
  ASSERT_TRUE(hold) << hold.error().describe();
  ASSERT_EQ(hold->held().size(), 1u);  // The runner.
  EXPECT_NE(hold->held()[0].context, nullptr);
  EXPECT_EQ(hold->sleeping().size(), 1u);  // The sleeper, not signalled.
  const std::uint64_t at_hold = spins.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(spins.load(), at_hold) << "a held thread ran";
  hold->release();
  while (spins.load() == at_hold) std::this_thread::yield();  // Released: it runs again.
  stop = true;
  runner.join();
  sleeper.join();
  EXPECT_EQ(eintr.load(), 0);
}

// A thread in a timed futex wait (pthread_cond_timedwait: Python's GIL
// waiter, timed locks) is held, not left asleep: its timeout may wake it
// during the change, and the GIL waiter then took the GIL and vforked a child
// that met a trap byte (real_programs). glibc waits again after the signal.
TEST(ThreadHold, AThreadInATimedFutexWaitIsHeldNotLeftAsleep) {
  std::mutex m;
  std::condition_variable cv;
  bool stop = false;
  std::atomic<pid_t> tid{0};
  std::thread waiter([&] {
    tid = static_cast<pid_t>(::syscall(SYS_gettid));
    std::unique_lock lock(m);
    while (!stop) cv.wait_for(lock, std::chrono::seconds(10));
  });
  for (;;) {  // Until it sleeps in its futex wait.
    const pid_t t = tid.load();
    auto call = t ? runtime::blocked_syscall(t) : Result<runtime::BlockedSyscall>(fail(ErrorCode::kUnprovable, ""));
    if (call && call->number == SYS_futex) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  auto hold = runtime::ThreadHold::hold_other_threads(std::chrono::milliseconds(1000));
  ASSERT_TRUE(hold) << hold.error().describe();
  EXPECT_EQ(hold->held().size(), 1u);
  EXPECT_TRUE(hold->sleeping().empty()) << "the timed waiter was left asleep";
  hold->release();
  {
    std::lock_guard lock(m);
    stop = true;
  }
  cv.notify_one();
  waiter.join();
}

// While it holds the other threads, the holder must not call malloc: a held
// thread may be inside malloc holding the lock of an arena the holder
// shares (glibc shares arenas beyond 8 threads per core). Here a sleeper
// left asleep wakes after the hold and is held by recheck_sleepers, the
// path that allocated its lists before; malloc counts the holder's calls.
std::atomic<int> g_mallocs_while_holding{0};
void* g_counting_malloc_original = nullptr;
void* counting_malloc(std::size_t n) {
  if (runtime::ThreadHold::held_by_this_thread()) g_mallocs_while_holding.fetch_add(1);
  return reinterpret_cast<void* (*)(std::size_t)>(__atomic_load_n(&g_counting_malloc_original, __ATOMIC_ACQUIRE))(n);
}

TEST(ThreadHold, RecheckingSleepersCallsNoMalloc) {
  auto outcome = run_in_child([]() -> int {
    auto malloc_address = patcher::resolve_symbol({"malloc", "", "libc.so.6"});
    CHILD_OK(malloc_address);
    auto hook = Hook::install(*malloc_address, reinterpret_cast<void*>(&counting_malloc), &g_counting_malloc_original);
    CHILD_OK(hook);
    int pipe_fds[2];
    CHILD_CHECK(::pipe(pipe_fds) == 0);
    std::atomic<pid_t> tid{0};
    std::atomic<bool> done{false};
    std::thread sleeper([&] {
      tid = static_cast<pid_t>(::syscall(SYS_gettid));
      pollfd p{pipe_fds[0], POLLIN, 0};
      (void)::poll(&p, 1, 10000);
      while (!done.load()) {  // Awake and running: the recheck must hold it.
      }
    });
    for (;;) {  // Until it sleeps in poll.
      auto call = tid.load() ? runtime::blocked_syscall(tid.load())
                             : Result<runtime::BlockedSyscall>(fail(ErrorCode::kUnprovable, ""));
      if (call && call->number == SYS_poll) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    auto hold = runtime::ThreadHold::hold_other_threads(std::chrono::milliseconds(1000));
    CHILD_OK(hold);
    CHILD_CHECK(hold->sleeping().size() == 1, "%zu sleepers", hold->sleeping().size());
    CHILD_CHECK(::write(pipe_fds[1], "x", 1) == 1);  // The sleeper wakes...
    while (runtime::blocked_syscall(tid.load()).has_value()) std::this_thread::yield();
    g_mallocs_while_holding = 0;  // Only the recheck's (the loop above allocates its error messages).
    const Status rechecked = hold->recheck_sleepers(std::chrono::milliseconds(1000));  // ...and is held.
    const int mallocs = g_mallocs_while_holding.load();
    const std::size_t held = hold->held().size();
    hold->release();
    done = true;
    sleeper.join();
    CHILD_OK(rechecked);
    CHILD_CHECK(held == 1, "%zu held after the recheck", held);
    CHILD_CHECK(mallocs == 0, "%d malloc calls while the other threads were held", mallocs);
    return 0;
  });
  EXPECT_CHILD_OK(outcome);
  EXPECT_EQ(outcome.signal, 0) << outcome.describe();
}

TEST(ThreadHold, ARunningThreadWithSignalsBlockedIsNamedAndNothingIsHeld) {
  std::atomic<bool> stop{false}, blocked{false};
  std::atomic<pid_t> tid{0};
  std::thread runner([&] {
    block_every_signal();
    tid = static_cast<pid_t>(::syscall(SYS_gettid));
    blocked = true;
    while (!stop.load(std::memory_order_relaxed)) {
    }
  });
  while (!blocked.load()) std::this_thread::yield();
  auto hold = runtime::ThreadHold::hold_other_threads(std::chrono::milliseconds(20));
  stop = true;
  runner.join();
  ASSERT_FALSE(hold);
  EXPECT_EQ(hold.error().code, ErrorCode::kTimeout);
  EXPECT_NE(hold.error().message.find(std::to_string(tid.load())), std::string::npos) << hold.error().message;
  // Nothing stays held: the next hold (no other thread now) works at once.
  auto again = runtime::ThreadHold::hold_other_threads(std::chrono::milliseconds(20));
  EXPECT_TRUE(again) << again.error().describe();
}

TEST(ThreadHold, ACommitAmongBlockedRunningThreadsIsRefusedWithMemoryUnchanged) {
  const std::uintptr_t f = emit_return(1);
  std::atomic<bool> stop{false}, blocked{false};
  std::atomic<std::uint64_t> wrong{0};
  std::thread runner([&] {
    block_every_signal();
    blocked = true;
    while (!stop.load(std::memory_order_relaxed))
      if (int v = as<int (*)()>(f)(); v != 1 && v != 2) wrong.fetch_add(1);
  });
  while (!blocked.load()) std::this_thread::yield();
  const auto before = bytes_at(f, 16);
  patcher::TransactionOptions options;
  options.thread_timeout = std::chrono::milliseconds(20);
  patcher::Transaction tx(options);
  ASSERT_TRUE(tx.add(site(f, mov_eax(1), mov_eax(2))));
  auto committed = tx.commit();
  const auto after = bytes_at(f, 16);
  stop = true;
  runner.join();
  ASSERT_FALSE(committed);
  EXPECT_EQ(committed.error().code, ErrorCode::kTimeout) << committed.error().describe();
  EXPECT_EQ(after, before);
  EXPECT_EQ(wrong.load(), 0u);
}

}  // namespace
}  // namespace punch::test
