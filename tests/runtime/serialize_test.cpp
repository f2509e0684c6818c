// Serializing the calling thread: each method (forced through the test seam)
// runs from an ordinary thread and from signal handlers, leaves the
// interrupted code's red zone, rsp and rflags as they were at any stack
// alignment, never uses iretq where a shadow stack is enabled, and makes code
// changed by another thread visible through sync_all_threads.
#include <punch/runtime/serialize.hpp>
#include <punch/runtime/sync.hpp>
#include <punch/runtime/threads.hpp>

#include <asm/prctl.h>
#include <asmjit/x86.h>
#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <punch/runtime/jit.hpp>

#include "child_process.hpp"
#include "seccomp.hpp"

extern "C" int punch_test_red_zone_kept(const volatile int* stop, volatile int* filled);
extern "C" std::uint64_t punch_test_call_with_flags(void (*fn)(), std::uint64_t set_flags, std::uint64_t misalign);

namespace punch::runtime {
namespace {

#ifndef ARCH_SHSTK_ENABLE
#define ARCH_SHSTK_ENABLE 0x5001
#define ARCH_SHSTK_STATUS 0x5005
#define ARCH_SHSTK_SHSTK (1ULL << 0)
#endif

constexpr SerializeMethod kAllMethods[] = {SerializeMethod::kSerialize, SerializeMethod::kIret,
                                           SerializeMethod::kCpuid};

// The kernel's answer for the calling thread; EINVAL (no shadow-stack support) is "off".
bool kernel_says_shadow_stack_on() {
  unsigned long features = 0;
  return ::syscall(SYS_arch_prctl, ARCH_SHSTK_STATUS, &features) == 0 && (features & ARCH_SHSTK_SHSTK) != 0;
}

// What serialize_method() must report on this thread with `forced` forced.
SerializeMethod expected_method(SerializeMethod forced) {
  return forced == SerializeMethod::kIret && kernel_says_shadow_stack_on() ? SerializeMethod::kCpuid : forced;
}

// Forces a method for one test body; tells whether this CPU can run it.
class Forced {
 public:
  explicit Forced(SerializeMethod method) : ok_(testing::force_serialize_method(method).has_value()) {}
  ~Forced() { (void)testing::force_serialize_method(std::nullopt); }
  Forced(const Forced&) = delete;
  Forced& operator=(const Forced&) = delete;
  bool ok() const { return ok_; }

 private:
  bool ok_;
};

bool cpu_has_serialize() {
  Forced forced(SerializeMethod::kSerialize);
  return forced.ok();
}

TEST(Serialize, MethodsAreNamed) {
  EXPECT_EQ(to_string(SerializeMethod::kSerialize), "serialize");
  EXPECT_EQ(to_string(SerializeMethod::kIret), "iret");
  EXPECT_EQ(to_string(SerializeMethod::kCpuid), "cpuid");
}

TEST(Serialize, DefaultIsSerializeWhereTheCpuHasItElseIretNeverCpuidWithoutAShadowStack) {
  const SerializeMethod best = cpu_has_serialize() ? SerializeMethod::kSerialize : SerializeMethod::kIret;
  EXPECT_EQ(serialize_method(), expected_method(best)) << "the default on this CPU is " << to_string(best);
}

TEST(Serialize, ForcingSerializeIsRefusedExactlyWhereTheCpuLacksIt) {
  unsigned a = 0, b = 0, c = 0, d = 0;
  asm volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));  // Leaf 0: the highest leaf.
  const unsigned max_leaf = a;
  a = 7, c = 0;
  asm volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
  const bool has = max_leaf >= 7 && (d & (1u << 14)) != 0;
  Status forced = testing::force_serialize_method(SerializeMethod::kSerialize);
  EXPECT_EQ(forced.has_value(), has);
  if (!forced) {
    EXPECT_EQ(forced.error().code, ErrorCode::kUnsupported) << forced.error().describe();
  }
  EXPECT_TRUE(testing::force_serialize_method(std::nullopt));
}

TEST(Serialize, EachMethodRunsOnManyThreadsAtOnce) {
  for (SerializeMethod method : kAllMethods) {
    Forced forced(method);
    if (!forced.ok()) continue;  // SERIALIZE on a CPU without it.
    EXPECT_EQ(serialize_method(), expected_method(method));
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&] {
        if (serialize_method() != expected_method(method)) ++wrong;
        for (int i = 0; i < 20'000; ++i) serialize_this_thread();
      });
    for (auto& t : threads) t.join();
    EXPECT_EQ(wrong.load(), 0) << to_string(method);
  }
}

// iretq restores rflags from the frame, so the frame must carry the flags the
// caller had: DF and ID here (set on purpose; nothing else sets them). It
// must also give back rsp exactly, whether the stack is aligned or not.
TEST(Serialize, EachMethodKeepsTheFlagsAndStackAtEitherAlignment) {
  constexpr std::uint64_t kDf = 1u << 10, kId = 1u << 21;
  for (SerializeMethod method : kAllMethods) {
    Forced forced(method);
    if (!forced.ok()) continue;
    for (std::uint64_t misalign : {0u, 8u}) {
      const std::uint64_t after = punch_test_call_with_flags(serialize_this_thread, kDf | kId, misalign);
      EXPECT_NE(after, 0u) << to_string(method) << ": rsp not given back (misaligned by " << misalign << ")";
      EXPECT_EQ(after & (kDf | kId), kDf | kId) << to_string(method) << ", misaligned by " << misalign;
    }
  }
}

// A thread keeps data in its red zone (a leaf function may) while signal
// handlers serialize on it, many times over: the data must be intact after.
TEST(Serialize, EachMethodInSignalHandlersLeavesTheInterruptedRedZoneIntact) {
  for (SerializeMethod method : kAllMethods) {
    Forced forced(method);
    if (!forced.ok()) continue;
    volatile int stop = 0, filled = 0;
    std::atomic<int> kept{-1};
    std::thread leaf([&] { kept = punch_test_red_zone_kept(&stop, &filled); });
    while (filled == 0) std::this_thread::yield();
    std::atomic<int> visits{0};
    for (int round = 0; round < 300; ++round) {
      auto r = visit_other_threads(
          [](ucontext_t*, void* arg) {
            serialize_this_thread();
            static_cast<std::atomic<int>*>(arg)->fetch_add(1);
          },
          &visits, std::chrono::milliseconds(5000));
      EXPECT_TRUE(r) << r.error().describe();
      if (!r) break;
    }
    stop = 1;
    leaf.join();
    EXPECT_GE(visits.load(), 300) << to_string(method);
    EXPECT_EQ(kept.load(), 1) << to_string(method) << ": the interrupted thread's red zone changed";
  }
}

// `mov eax, imm32; ret` at a fixed address, changed by this thread and run by
// another after each sync_all_threads(); nothing is wrong when every call
// returned the value just written. Returns what went wrong, or "".
std::string cross_modify_through_sync(int rounds) {
  auto heap = CodeHeap::global();
  if (!heap) return heap.error().describe();
  Jit jit(**heap);
  asmjit::CodeHolder holder;
  holder.init(Jit::environment());
  asmjit::x86::Assembler a(&holder);
  a.mov(asmjit::x86::eax, 0);
  a.ret();
  auto fn = jit.add_as<int (*)()>(holder);
  if (!fn) return fn.error().describe();
  const auto address = reinterpret_cast<std::uintptr_t>(*fn);

  std::atomic<int> published{0}, answered{0}, returned{0};
  std::atomic<bool> stop{false};
  std::thread runner([&] {
    while (!stop.load(std::memory_order_acquire)) {
      const int value = published.load(std::memory_order_acquire);
      if (value == answered.load(std::memory_order_relaxed)) continue;
      returned.store((*fn)(), std::memory_order_relaxed);
      answered.store(value, std::memory_order_release);
    }
  });
  std::string wrong;
  for (int value = 1; value <= rounds && wrong.empty(); ++value) {
    std::uint8_t imm[4];
    std::memcpy(imm, &value, 4);
    if (Status written = (*heap)->writer().write(address + 1, imm); !written)
      wrong = written.error().describe();
    else if (Status synced = sync_all_threads(); !synced)
      wrong = synced.error().describe();
    if (!wrong.empty()) break;
    published.store(value, std::memory_order_release);
    while (answered.load(std::memory_order_acquire) != value) std::this_thread::yield();
    if (const int got = returned.load(std::memory_order_relaxed); got != value)
      wrong = "round " + std::to_string(value) + ": the other thread ran old code (" + std::to_string(got) + ")";
  }
  stop = true;
  runner.join();
  (void)jit.release(reinterpret_cast<void*>(*fn));
  return wrong;
}

TEST(Serialize, CrossModifiedCodeRunsOnAnotherThreadAfterSyncWithEachMethod) {
  for (SerializeMethod method : kAllMethods) {
    Forced forced(method);
    if (!forced.ok()) continue;
    EXPECT_EQ(cross_modify_through_sync(300), "") << to_string(method) << ", sync by " << to_string(sync_method());
  }
}

// Where membarrier is refused every other thread serializes in a signal
// handler with the forced method, and the caller serializes itself.
TEST(Serialize, CrossModifiedCodeRunsOnAnotherThreadAfterSignalSyncWithEachMethod) {
  EXPECT_CHILD_OK(test::run_in_child([] {
    if (std::string why = test::install_seccomp_errno({{SYS_membarrier, EINVAL}}); !why.empty()) {
      std::printf("seccomp not permitted: %s\n", why.c_str());
      return test::kChildSkip;
    }
    for (SerializeMethod method : kAllMethods) {
      Forced forced(method);
      if (!forced.ok()) continue;
      const std::string wrong = cross_modify_through_sync(200);
      CHILD_CHECK(wrong.empty(), "%s: %s", std::string(to_string(method)).c_str(), wrong.c_str());
      CHILD_CHECK(sync_method() == SyncMethod::kSignals);
    }
    return 0;
  }));
}

TEST(Serialize, MembarrierSerializesTheCallerFromLinux510On) {
  struct utsname name;
  ASSERT_EQ(::uname(&name), 0);
  int major = 0, minor = 0;
  ASSERT_EQ(std::sscanf(name.release, "%d.%d", &major, &minor), 2) << name.release;
  EXPECT_EQ(membarrier_serializes_caller(), major > 5 || (major == 5 && minor >= 10)) << name.release;
}

// Where the CPU and kernel have user-mode shadow stacks, a thread that turns
// one on must serialize with cpuid, never iretq (which would fault). The
// child enables it with a raw system call and never returns from the frame
// that did (its return address is not on the new shadow stack).
TEST(Serialize, AThreadWithAShadowStackNeverUsesIret) {
  EXPECT_CHILD_OK(test::run_in_child([]() -> int {
    CHILD_CHECK(testing::force_serialize_method(SerializeMethod::kIret).has_value());
    CHILD_CHECK(serialize_method() == expected_method(SerializeMethod::kIret));
    long enabled;
    asm volatile("syscall"
                 : "=a"(enabled)
                 : "a"(SYS_arch_prctl), "D"(ARCH_SHSTK_ENABLE), "S"(ARCH_SHSTK_SHSTK)
                 : "rcx", "r11", "memory");
    if (enabled != 0) {
      std::printf("no user-mode shadow stack here (arch_prctl(ARCH_SHSTK_ENABLE): %s)\n", std::strerror(-enabled));
      return test::kChildSkip;
    }
    int status = kernel_says_shadow_stack_on() ? 0 : 10;
    if (status == 0 && serialize_method() != SerializeMethod::kCpuid) status = 11;
    if (status == 0) serialize_this_thread();  // Faults (#CP) if it took iretq.
    std::fflush(stdout);
    ::_exit(status);
  }));
}

}  // namespace
}  // namespace punch::runtime
