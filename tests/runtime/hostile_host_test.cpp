// The hostile-host matrix: each row runs in a child process that makes the
// host hostile in one way, then checks what still works, what falls back,
// and what error a user sees.
#include <asmjit/x86.h>
#include <gtest/gtest.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <thread>

#include <punch/runtime/jit.hpp>
#include <punch/runtime/probe.hpp>
#include <punch/runtime/safe_read.hpp>

#include "busy_thread.hpp"
#include "child_process.hpp"
#include "sanitizer.hpp"
#include "seccomp.hpp"

namespace punch::runtime {
namespace {

// JITs `mov eax, 42; ret` with `writer` and runs it; 0 when it returned 42.
int emit_and_run(CodeWriter& writer) {
  CodeHeap heap(writer);
  Jit jit(heap);
  asmjit::CodeHolder code;
  code.init(Jit::environment());
  asmjit::x86::Assembler a(&code);
  a.mov(asmjit::x86::eax, 42);
  a.ret();
  auto fn = jit.add_as<int (*)()>(code);
  if (!fn) {
    std::printf("emit with %s: %s\n", std::string(to_string(writer.method())).c_str(), fn.error().describe().c_str());
    return 1;
  }
  return (*fn)() == 42 ? 0 : 1;
}

int emit_with_auto() {
  auto writer = CodeWriter::from_name("auto");
  if (!writer) {
    std::printf("auto: %s\n", writer.error().describe().c_str());
    return 1;
  }
  return emit_and_run(**writer);
}

void print_caps(const Capabilities& caps) {
  std::printf("proc_mem_write=%s (%s) dual_map=%d mprotect=%d mdwe=%d auto=%s sync=%s\n",
              std::string(to_string(caps.proc_mem_write)).c_str(), caps.proc_mem_detail.c_str(), caps.dual_map_works,
              caps.mprotect_works, caps.mdwe,
              caps.auto_method ? std::string(to_string(*caps.auto_method)).c_str() : "none",
              std::string(to_string(caps.sync)).c_str());
}

TEST(HostileHost, DefaultHostUsesProcMemAndMembarrier) {
  EXPECT_CHILD_OK(test::run_in_child([] {
    Capabilities caps = probe();
    print_caps(caps);
    CHILD_CHECK(caps.auto_method.has_value());
    CHILD_CHECK(caps.proc_mem_write != ProcMemState::kOk || *caps.auto_method == WriteMethod::kProcMem);
    return emit_with_auto();
  }));
}

TEST(HostileHost, MdweStillEmitsWithProcMemAndReportsMprotectUnavailable) {
  EXPECT_CHILD_OK(test::run_in_child([] {
    if (::prctl(65 /* PR_SET_MDWE */, 1UL /* PR_MDWE_REFUSE_EXEC_GAIN */, 0L, 0L, 0L) != 0) {
      std::printf("PR_SET_MDWE not available (Linux 6.3+): %s\n", std::strerror(errno));
      return test::kChildSkip;
    }
    // Control: MDWE is really in force.
    void* page = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHILD_CHECK(::mprotect(page, 4096, PROT_READ | PROT_EXEC) != 0);
    Capabilities caps = probe();
    print_caps(caps);
    CHILD_CHECK(caps.mdwe);
    CHILD_CHECK(!caps.mprotect_works);
    CHILD_CHECK(caps.auto_method == WriteMethod::kProcMem);
    auto mprotect_writer = CodeWriter::create(WriteMethod::kMprotect);
    CHILD_CHECK(!mprotect_writer);
    std::printf("mprotect: %s\n", mprotect_writer.error().describe().c_str());
    CHILD_CHECK(mprotect_writer.error().message.find("MDWE") != std::string::npos);
    return emit_with_auto();
  }));
}

// Hides /proc behind a tmpfs in a private mount namespace; "" or the reason it is not permitted.
std::string hide_proc() {
  if (::unshare(CLONE_NEWNS) != 0) {
    // Without CAP_SYS_ADMIN: a user namespace first, mapping our ids.
    const uid_t uid = ::getuid();
    const gid_t gid = ::getgid();
    if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) return std::string("unshare: ") + std::strerror(errno);
    auto put = [](const char* path, const std::string& text) {
      int fd = ::open(path, O_WRONLY | O_CLOEXEC);
      if (fd < 0) return false;
      bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
      ::close(fd);
      return ok;
    };
    put("/proc/self/setgroups", "deny");
    if (!put("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1") ||
        !put("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1"))
      return "cannot write the user namespace id maps";
  }
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
    return std::string("mount --make-rprivate /: ") + std::strerror(errno);
  if (::mount("tmpfs", "/proc", "tmpfs", 0, "size=64k") != 0)
    return std::string("mount tmpfs on /proc: ") + std::strerror(errno);
  return "";
}

TEST(HostileHost, ProcMemAbsentAutoFallsBackAndExplicitProcMemFailsClearly) {
  EXPECT_CHILD_OK(test::run_in_child([] {
    if (std::string why = hide_proc(); !why.empty()) {
      std::printf("cannot hide /proc here: %s\n", why.c_str());
      return test::kChildSkip;
    }
    CHILD_CHECK(::access("/proc/self/mem", F_OK) != 0);  // Control.
    Capabilities caps = probe();
    print_caps(caps);
    CHILD_CHECK(caps.proc_mem_write == ProcMemState::kAbsent);
    CHILD_CHECK(caps.auto_method.has_value() && *caps.auto_method != WriteMethod::kProcMem);
    auto explicit_proc_mem = CodeWriter::from_name("proc-mem");
    CHILD_CHECK(!explicit_proc_mem);
    std::printf("proc-mem: %s\n", explicit_proc_mem.error().describe().c_str());
    CHILD_CHECK(explicit_proc_mem.error().message.find("/proc/self/mem") != std::string::npos);
    // safe_read falls back to process_vm_readv.
    static const std::uint8_t data[3] = {7, 8, 9};
    auto bytes = safe_read_exact(reinterpret_cast<std::uintptr_t>(data), 3);
    CHILD_CHECK(bytes && (*bytes)[2] == 9);
    return emit_with_auto();
  }));
}

// The example a user runs first: without /proc its code runs through the
// dual-map fallback; it says it could not list the pages, and passes.
TEST(HostileHost, HelloJitWithoutProcRunsAndSaysWhatItCouldNotCheck) {
#ifdef PUNCH_ASAN
  // The g++ and MDWE runs of the suite run it.
  GTEST_SKIP() << "LeakSanitizer dies at exit without /proc (it lists threads in /proc/<pid>/task, and reads "
                  "its options, detect_leaks=0 too, from /proc/self/environ)";
#endif
#ifndef PUNCH_HELLO_JIT
  GTEST_SKIP() << "examples are not built (PUNCH_BUILD_EXAMPLES=OFF)";
#else
  const test::ChildOutcome outcome = test::run_in_child([] {
    if (std::string why = hide_proc(); !why.empty()) {
      std::printf("cannot hide /proc here: %s\n", why.c_str());
      return test::kChildSkip;
    }
    ::execl(PUNCH_HELLO_JIT, "hello_jit", static_cast<char*>(nullptr));
    std::printf("cannot run %s: %s\n", PUNCH_HELLO_JIT, std::strerror(errno));
    return 127;
  });
  EXPECT_CHILD_OK(outcome);
  EXPECT_NE(outcome.output.find("write method: dual-map"), std::string::npos) << outcome.output;
  EXPECT_NE(outcome.output.find("factorial(10)  = 3628800"), std::string::npos) << outcome.output;
  EXPECT_NE(outcome.output.find("could not check the code's page permissions"), std::string::npos) << outcome.output;
#endif
}

TEST(HostileHost, ProcMemWritesRefusedWithEioAutoFallsBack) {
  EXPECT_CHILD_OK(test::run_in_child([] {
    if (std::string why = test::install_seccomp_errno({{SYS_pwrite64, EIO}}); !why.empty()) {
      std::printf("seccomp not permitted: %s\n", why.c_str());
      return test::kChildSkip;
    }
    Capabilities caps = probe();
    print_caps(caps);
    CHILD_CHECK(caps.proc_mem_write == ProcMemState::kBlocked);
    CHILD_CHECK(caps.auto_method.has_value() && *caps.auto_method != WriteMethod::kProcMem);
    auto explicit_proc_mem = CodeWriter::create(WriteMethod::kProcMem);
    CHILD_CHECK(!explicit_proc_mem);
    std::printf("proc-mem: %s\n", explicit_proc_mem.error().describe().c_str());
    CHILD_CHECK(explicit_proc_mem.error().code == ErrorCode::kBlocked);
    return emit_with_auto();
  }));
}

TEST(HostileHost, MembarrierRefusedSignalFallbackSyncsBusyThreads) {
  EXPECT_CHILD_OK(test::run_in_child([] {
    if (std::string why = test::install_seccomp_errno({{SYS_membarrier, EINVAL}}); !why.empty()) {
      std::printf("seccomp not permitted: %s\n", why.c_str());
      return test::kChildSkip;
    }
    test::BusyThread a, b;
    for (int i = 0; i < 20; ++i) {
      auto synced = sync_all_threads();
      if (!synced) {
        std::printf("sync: %s\n", synced.error().describe().c_str());
        return 1;
      }
    }
    CHILD_CHECK(sync_method() == SyncMethod::kSignals);
    CHILD_CHECK(!probe().membarrier_sync_core);
    return emit_with_auto();
  }));
}

TEST(HostileHost, ThreadWithAllSignalsBlockedIsNamedNotWaitedForForever) {
  EXPECT_CHILD_OK(test::run_in_child([] {
    if (std::string why = test::install_seccomp_errno({{SYS_membarrier, EINVAL}}); !why.empty()) {
      std::printf("seccomp not permitted: %s\n", why.c_str());
      return test::kChildSkip;
    }
    std::atomic<pid_t> tid{0};
    std::atomic<bool> stop{false};
    std::thread deaf([&] {
      sigset_t all;
      sigfillset(&all);
      pthread_sigmask(SIG_BLOCK, &all, nullptr);
      tid = static_cast<pid_t>(::syscall(SYS_gettid));
      while (!stop) std::this_thread::yield();
    });
    while (tid == 0) std::this_thread::yield();
    auto synced = sync_all_threads(std::chrono::milliseconds(200));
    stop = true;
    deaf.join();
    CHILD_CHECK(!synced);
    std::printf("sync: %s\n", synced.error().describe().c_str());
    CHILD_CHECK(synced.error().code == ErrorCode::kTimeout);
    CHILD_CHECK(synced.error().message.find(std::to_string(tid.load())) != std::string::npos);
    return 0;
  }));
}

TEST(HostileHost, NonRootProcessStillWritesThroughProcMem) {
  EXPECT_CHILD_OK(test::run_in_child([] {
    if (::getuid() == 0) {
      if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) {
        std::printf("cannot drop to nobody: %s\n", std::strerror(errno));
        return test::kChildSkip;
      }
      // setuid leaves the process non-dumpable, which hands /proc/self to root;
      // an ordinary non-root program is dumpable, so make this one so too.
      auto before = CodeWriter::create(WriteMethod::kProcMem);
      if (!before) std::printf("not dumpable: %s\n", before.error().describe().c_str());
      CHILD_CHECK(before || before.error().message.find("dumpable") != std::string::npos);
      CHILD_CHECK(::prctl(PR_SET_DUMPABLE, 1) == 0);
    }
    CHILD_CHECK(::getuid() != 0);
    auto writer = CodeWriter::create(WriteMethod::kProcMem);
    if (!writer) {
      std::printf("proc-mem as uid %d: %s\n", static_cast<int>(::getuid()), writer.error().describe().c_str());
      return 1;
    }
    return emit_and_run(**writer);
  }));
}

}  // namespace
}  // namespace punch::runtime
