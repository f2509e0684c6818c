// The hostile-host matrix for patching (issue 6): each row runs in a child
// process that makes the host hostile in one way, then hooks a function of
// this binary and commits a live transaction on JIT code, and reports what
// works, what falls back and what error a user sees. Every refusal leaves the
// target's bytes as they were.
#include <asmjit/x86.h>
#include <gtest/gtest.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include <punch/patcher/hook.hpp>
#include <punch/runtime/code_writer.hpp>
#include <punch/runtime/sync.hpp>

#include "hook_targets.hpp"
#include "busy_thread.hpp"
#include "child_process.hpp"
#include "live_test_support.hpp"
#include "memory_snapshot.hpp"
#include "seccomp.hpp"

namespace punch::patcher {
namespace {

using namespace asmjit;

// A detour adding 1000 to the original, one per target (Tag): a thread still
// inside one target's detour must never pick up another target's trampoline.
template <int Tag>
struct Plus1000 {
  static inline std::atomic<Fn> original{nullptr};
  static long detour(long x) { return original.load()(x) + 1000; }
};
constexpr auto plus_1000 = &Plus1000<0>::detour;

// Hook `f` (3x + 7 or x + 100 ...) with Plus1000<Tag>, call it, remove it: 0 when all worked, else prints why.
template <int Tag>
int hook_call_remove(Fn f, long (*expected)(long)) {
  HookOptions options;
  options.enabled = false;
  auto hook = Hook::install(reinterpret_cast<void*>(f), reinterpret_cast<void*>(&Plus1000<Tag>::detour), options);
  if (!hook) {
    std::printf("hook install: %s\n", hook.error().describe().c_str());
    return 1;
  }
  Plus1000<Tag>::original = hook->original<Fn>();
  if (auto s = hook->enable(); !s) {
    std::printf("hook enable: %s\n", s.error().describe().c_str());
    return 1;
  }
  CHILD_CHECK(call(f, 4) == expected(4) + 1000);
  if (auto s = hook->remove(); !s) {
    std::printf("hook remove: %s\n", s.error().describe().c_str());
    return 1;
  }
  CHILD_CHECK(call(f, 4) == expected(4));
  return 0;
}

long prologue_value(long x) { return 3 * x + 7; }
long pad_value(long x) { return x + 100; }

// Emits `mov eax, 1; ret`, commits `mov eax, 2` over it, reverts. 0 when all worked.
int live_transaction() {
  const std::uintptr_t f = test::emit_return(1);
  CHILD_CHECK(f != 0);
  Transaction tx;
  CHILD_CHECK(tx.add(test::site(f, test::mov_eax(1), test::mov_eax(2))));
  if (auto s = tx.commit(); !s) {
    std::printf("commit: %s\n", s.error().describe().c_str());
    return 1;
  }
  CHILD_CHECK(test::as<int (*)()>(f)() == 2);
  CHILD_CHECK(tx.revert());
  CHILD_CHECK(test::as<int (*)()>(f)() == 1);
  return 0;
}

// The whole row: a hook on a multi-instruction prologue, a patchable entry, and a transaction.
int patch_everything() {
  if (hook_call_remove<0>(hook_target_prologue, prologue_value) != 0) return 1;
  if (hook_call_remove<1>(hook_target_pad_nop5, pad_value) != 0) return 1;
  if (live_transaction() != 0) return 1;
  std::printf("hooks and live transactions work (writer %s, sync %s)\n",
              std::string(runtime::to_string((*runtime::CodeWriter::global())->method())).c_str(),
              std::string(runtime::to_string(runtime::sync_method())).c_str());
  return 0;
}

TEST(HostileHostPatch, DefaultHost) {
  ASSERT_TRUE(runtime::CodeWriter::global());
  EXPECT_CHILD_OK(test::run_in_child([] { return patch_everything(); }));
}

TEST(HostileHostPatch, MdweHooksAndPatches) {
  ASSERT_TRUE(runtime::CodeWriter::global());
  EXPECT_CHILD_OK(test::run_in_child([] {
    if (::prctl(65 /* PR_SET_MDWE */, 1UL /* PR_MDWE_REFUSE_EXEC_GAIN */, 0L, 0L, 0L) != 0) {
      std::printf("PR_SET_MDWE not available (Linux 6.3+): %s\n", std::strerror(errno));
      return test::kChildSkip;
    }
    return patch_everything();
  }));
}

// /proc/self/mem writes refused with EIO (what proc_mem.force_override=never does),
// in a process whose writer was already chosen: every hook and commit fails
// cleanly with kBlocked naming the address, and memory is unchanged.
TEST(HostileHostPatch, ProcMemWritesRefusedAfterStartFailCleanly) {
  auto writer = runtime::CodeWriter::global();
  ASSERT_TRUE(writer);
  if ((*writer)->method() != runtime::WriteMethod::kProcMem) GTEST_SKIP() << "the writer here is not proc-mem";
  const std::uintptr_t jit = test::emit_return(1);
  ASSERT_NE(jit, 0u);
  EXPECT_CHILD_OK(test::run_in_child([&] {
    if (std::string why = test::install_seccomp_errno({{SYS_pwrite64, EIO}}); !why.empty()) {
      std::printf("seccomp not permitted: %s\n", why.c_str());
      return test::kChildSkip;
    }
    const test::MemorySnapshot target(reinterpret_cast<void*>(hook_target_prologue), 32);
    const test::MemorySnapshot code(jit, 6);
    auto hook = Hook::install(reinterpret_cast<void*>(hook_target_prologue), reinterpret_cast<void*>(plus_1000));
    CHILD_CHECK(!hook);
    std::printf("hook install: %s\n", hook.error().describe().c_str());
    CHILD_CHECK(hook.error().code == ErrorCode::kBlocked);
    CHILD_CHECK(hook.error().message.find(at(reinterpret_cast<void*>(hook_target_prologue))) != std::string::npos);
    CHILD_CHECK(target.unchanged());
    Transaction tx;
    CHILD_CHECK(tx.add(test::site(jit, test::mov_eax(1), test::mov_eax(2))));
    auto committed = tx.commit();
    CHILD_CHECK(!committed);
    std::printf("commit: %s\n", committed.error().describe().c_str());
    CHILD_CHECK(committed.error().code == ErrorCode::kBlocked);  // (It names the copy it failed to write first.)
    CHILD_CHECK(code.unchanged());
    return 0;
  }));
}

// A process that starts on such a host: `auto` picks the dual-map writer,
// which can write only memory it mapped. JIT code and patches of it work; a
// hook of this binary's code cannot be written — the user sees why.
int fresh_process_row() {
  if (std::string why = test::install_seccomp_errno({{SYS_pwrite64, EIO}}); !why.empty()) {
    std::printf("seccomp not permitted: %s\n", why.c_str());
    return test::kChildSkip;
  }
  auto writer = runtime::CodeWriter::global();
  if (!writer) {
    std::printf("no writer: %s\n", writer.error().describe().c_str());
    return 1;
  }
  std::printf("writer: %s\n", std::string(runtime::to_string((*writer)->method())).c_str());
  CHILD_CHECK((*writer)->method() != runtime::WriteMethod::kProcMem);
  if (live_transaction() != 0) return 1;  // punch's own code: still patchable.
  const test::MemorySnapshot target(reinterpret_cast<void*>(hook_target_prologue), 32);
  auto hook = Hook::install(reinterpret_cast<void*>(hook_target_prologue), reinterpret_cast<void*>(plus_1000));
  if (hook) {
    std::printf("hook install: works (the %s writer reaches this binary's code)\n",
                std::string(runtime::to_string((*writer)->method())).c_str());
    CHILD_CHECK(hook->remove());
  } else {
    std::printf("hook install: %s\n", hook.error().describe().c_str());
    CHILD_CHECK((*writer)->method() == runtime::WriteMethod::kDualMap);
    CHILD_CHECK(hook.error().code == ErrorCode::kUnsupported);
    CHILD_CHECK(hook.error().message.find(at(reinterpret_cast<void*>(hook_target_prologue))) != std::string::npos);
    CHILD_CHECK(hook.error().message.find("dual-map") != std::string::npos);
  }
  CHILD_CHECK(target.unchanged());
  return 0;
}

// Run as a fresh process (exec of this binary with PUNCH_HOSTILE_PATCH_ROW set): the
// row runs before any test and before anything picked the process-wide writer.
const bool g_row_mode = [] {
  const char* row = std::getenv("PUNCH_HOSTILE_PATCH_ROW");
  if (row == nullptr || std::string(row) != "proc-mem-eio-from-start") return false;
  const int code = fresh_process_row();
  std::fflush(stdout);
  _exit(code);
}();

TEST(HostileHostPatch, ProcMemWritesRefusedFromStartUsesAnotherWriter) {
  char self[4096] = {};
  ASSERT_GT(::readlink("/proc/self/exe", self, sizeof self - 1), 0);
  EXPECT_FALSE(g_row_mode);
  EXPECT_CHILD_OK(test::run_in_child([&] {
    ::setenv("PUNCH_HOSTILE_PATCH_ROW", "proc-mem-eio-from-start", 1);
    ::unsetenv("PUNCH_WRITE_METHOD");
    ::execl(self, self, static_cast<char*>(nullptr));
    std::perror("execl");
    return 127;
  }));
}

// membarrier refused (gVisor returns EINVAL): the sync falls back to signalling
// every thread; hooks and live patches work while other threads run the code.
TEST(HostileHostPatch, MembarrierRefusedFallsBackToSignals) {
  ASSERT_TRUE(runtime::CodeWriter::global());
  EXPECT_CHILD_OK(test::run_in_child([] {
    if (std::string why = test::install_seccomp_errno({{SYS_membarrier, EINVAL}}); !why.empty()) {
      std::printf("seccomp not permitted: %s\n", why.c_str());
      return test::kChildSkip;
    }
    std::atomic<long> wrong{0}, first_x{0}, first_result{0};
    {
      test::BusyThread a([&] {
        for (long x = 0; x < 50; ++x)
          if (const long r = call(hook_target_prologue, x); r != 3 * x + 7 && r != 3 * x + 1007 && !wrong++) {
            first_x = x;
            first_result = r;
          }
      });
      for (int i = 0; i < 20; ++i)
        if (patch_everything() != 0) return 1;
    }
    CHILD_CHECK(wrong.load() == 0, "%ld wrong results; the first: f(%ld) = %ld", wrong.load(), first_x.load(),
                first_result.load());
    CHILD_CHECK(runtime::sync_method() == runtime::SyncMethod::kSignals);
    return 0;
  }));
}

// Not root: an ordinary (dumpable) process opens its own /proc/self/mem again after fork.
TEST(HostileHostPatch, NonRootHooksAndPatches) {
  ASSERT_TRUE(runtime::CodeWriter::global());
  EXPECT_CHILD_OK(test::run_in_child([] {
    if (::getuid() == 0) {
      if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) {
        std::printf("cannot drop to nobody: %s\n", std::strerror(errno));
        return test::kChildSkip;
      }
      CHILD_CHECK(::prctl(PR_SET_DUMPABLE, 1) == 0);  // setuid cleared it; ordinary programs are dumpable.
    }
    CHILD_CHECK(::getuid() != 0);
    return patch_everything();
  }));
}

// A thread with every signal blocked, running (not in a system call), cannot
// be held still, and a trap byte it met would kill the process: every live
// change is refused with kTimeout naming the thread, memory unchanged (with
// hold_threads off, a patchable entry still hooks: the old, unsafe path).
TEST(HostileHostPatch, ThreadWithAllSignalsBlocked) {
  ASSERT_TRUE(runtime::CodeWriter::global());
  EXPECT_CHILD_OK(test::run_in_child([] {
    std::atomic<pid_t> tid{0};
    std::atomic<bool> stop{false};
    std::thread deaf([&] {
      sigset_t all;
      sigfillset(&all);
      pthread_sigmask(SIG_BLOCK, &all, nullptr);
      tid = static_cast<pid_t>(::syscall(SYS_gettid));
      while (!stop) {
      }
    });
    while (tid == 0) std::this_thread::yield();
    const test::MemorySnapshot target(reinterpret_cast<void*>(hook_target_prologue), 32);
    HookOptions options;
    options.transaction.thread_timeout = std::chrono::milliseconds(200);
    auto hook =
        Hook::install(reinterpret_cast<void*>(hook_target_prologue), reinterpret_cast<void*>(plus_1000), options);
    const bool refused = !hook;
    std::printf("multi-instruction hook: %s\n", refused ? hook.error().describe().c_str() : "installed");
    const test::MemorySnapshot pad(reinterpret_cast<void*>(hook_target_pad_nop5), 16);
    auto pad_hook =
        Hook::install(reinterpret_cast<void*>(hook_target_pad_nop5), reinterpret_cast<void*>(plus_1000), options);
    const bool pad_refused = !pad_hook && pad_hook.error().code == ErrorCode::kTimeout && pad.unchanged();
    std::printf("patchable entry: %s (sync %s)\n", pad_hook ? "hooked" : pad_hook.error().describe().c_str(),
                std::string(runtime::to_string(runtime::sync_method())).c_str());
    stop = true;
    deaf.join();
    CHILD_CHECK(refused);
    CHILD_CHECK(hook.error().code == ErrorCode::kTimeout);
    CHILD_CHECK(hook.error().message.find(std::to_string(tid.load())) != std::string::npos);
    CHILD_CHECK(target.unchanged());
    CHILD_CHECK(pad_refused || runtime::sync_method() == runtime::SyncMethod::kSignals);
    return 0;
  }));
}

}  // namespace
}  // namespace punch::patcher
