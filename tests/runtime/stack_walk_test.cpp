// walk_stack: never faults on garbage, works in a signal handler, walks through JIT frames.
#include <punch/runtime/stack_walk.hpp>

#include <asmjit/x86.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

#include <punch/runtime/function_bounds.hpp>
#include <punch/runtime/jit.hpp>

#include "own_heap_fixture.hpp"
#include "registered_frames.hpp"
#include "unwind_table.hpp"

namespace punch::runtime {
namespace {

TEST(WalkStack, GarbageFramePointersEndTheWalkWithoutAFault) {
  alignas(16) std::uintptr_t stack[64] = {};
  const auto base = reinterpret_cast<std::uintptr_t>(stack);
  std::uintptr_t out[32];

  // Unreadable frame pointers: null, in the first page, just unmapped, misaligned.
  void* page = ::mmap(nullptr, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(page, MAP_FAILED);
  ::munmap(page, 4096);
  for (std::uintptr_t fp : {std::uintptr_t{0}, std::uintptr_t{0x10}, reinterpret_cast<std::uintptr_t>(page), base + 3,
                            ~std::uintptr_t{7}}) {
    EXPECT_EQ(walk_stack(0x1234, base, fp, out), 1u) << std::hex << fp;
  }

  // A frame whose saved frame pointer leads into unmapped memory: one caller, then stop.
  stack[8] = reinterpret_cast<std::uintptr_t>(page);  // [fp]
  stack[9] = 0x5678;                                  // [fp + 8]: return address
  EXPECT_EQ(walk_stack(0x1234, base, base + 8 * 8, out), 2u);
  EXPECT_EQ(out[1], 0x5678u);

  // A frame pointer chain that loops (a frame pointing at itself, then two frames at each other).
  stack[8] = base + 8 * 8;
  EXPECT_LE(walk_stack(0x1234, base, base + 8 * 8, out), 2u);
  stack[8] = base + 16 * 8;
  stack[16] = base + 8 * 8;
  stack[17] = 0x9abc;
  EXPECT_LE(walk_stack(0x1234, base, base + 8 * 8, out), 3u);

  // A frame pointer that points down the stack (below sp) is not followed.
  EXPECT_EQ(walk_stack(0x1234, base + 32 * 8, base + 8 * 8, out), 1u);

  // A long valid chain is cut at the depth asked for.
  for (int i = 0; i < 30; ++i) {
    stack[2 * i] = base + 16 * (i + 1);
    stack[2 * i + 1] = 0x1000 + i;
  }
  EXPECT_EQ(walk_stack(0x1234, base, base, std::span(out, 5)), 5u);
}

// A JIT function that never moves rsp (described frameless) and spins until
// *stop is set, telling *started first.
struct Spinner {
  asmjit::CodeHolder code;
};
void emit_spinner(asmjit::CodeHolder& code, std::atomic<int>* started, std::atomic<int>* stop) {
  using namespace asmjit;
  code.init(Jit::environment());
  x86::Assembler a(&code);
  Label loop = a.newLabel();
  a.mov(x86::rax, imm(reinterpret_cast<std::uint64_t>(started)));
  a.mov(x86::dword_ptr(x86::rax), 1);
  a.mov(x86::rax, imm(reinterpret_cast<std::uint64_t>(stop)));
  a.bind(loop);
  a.pause();
  a.cmp(x86::dword_ptr(x86::rax), 0);
  a.je(loop);
  a.ret();
}

std::atomic<int> g_started{0}, g_stop{0};
std::uintptr_t g_walked[32];
std::size_t g_walked_count = 0;

void walk_in_handler(int, siginfo_t*, void* context) {
  g_walked_count = walk_stack(*static_cast<ucontext_t*>(context), g_walked);
  g_stop.store(1);
}

[[gnu::noinline]] void run_spinner(void (*spin)()) {
  spin();
  asm volatile("");  // The return address stays inside this function.
}

class WalkStackJitTest : public test::OwnHeapTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(make_heap(64 * 1024));
    jit = std::make_unique<Jit>(*heap);
  }
  std::unique_ptr<Jit> jit;
};

TEST_F(WalkStackJitTest, FromASignalHandlerThroughAFramelessJitFunctionToItsCaller) {
  asmjit::CodeHolder code;
  emit_spinner(code, &g_started, &g_stop);
  auto spin = jit->add_as<void (*)()>(code, {"spinner", FrameDescription::frameless()});
  ASSERT_TRUE(spin) << spin.error().describe();
  const auto start = reinterpret_cast<std::uintptr_t>(*spin);
  const std::size_t size = code.codeSize();

  struct sigaction sa {
  }, old{};
  sa.sa_sigaction = walk_in_handler;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(::sigaction(SIGUSR2, &sa, &old), 0);
  g_started = 0;
  g_stop = 0;
  std::thread spinner([&] { run_spinner(*spin); });
  while (g_started.load() == 0) std::this_thread::yield();
  ::pthread_kill(spinner.native_handle(), SIGUSR2);
  spinner.join();
  ::sigaction(SIGUSR2, &old, nullptr);

  ASSERT_GE(g_walked_count, 2u);
  EXPECT_GE(g_walked[0], start);
  EXPECT_LT(g_walked[0], start + size);
  auto caller = function_containing(g_walked[1] - 1);
  ASSERT_TRUE(caller) << caller.error().describe();
  EXPECT_EQ(caller->start, reinterpret_cast<std::uintptr_t>(&run_spinner));
  ASSERT_TRUE(jit->release(reinterpret_cast<void*>(*spin)));
}

// Called from JIT code: walks from here. The frame address keeps a frame pointer in this function.
std::uintptr_t g_from_callee[32];
std::size_t g_from_callee_count = 0;
[[gnu::noinline]] void walk_from_callee() {
  void* volatile frame = __builtin_frame_address(0);
  (void)frame;
  g_from_callee_count = walk_stack(g_from_callee);
}

[[gnu::noinline]] void run_jit(void (*fn)()) {
  fn();
  asm volatile("");
}

TEST_F(WalkStackJitTest, FromTheCurrentFrameThroughAJitFrameToItsCaller) {
  using namespace asmjit;
  CodeHolder code;
  code.init(Jit::environment());
  x86::Assembler a(&code);
  a.push(x86::rbp);
  a.mov(x86::rbp, x86::rsp);
  a.push(x86::rbx);  // rsp moves again: the description, not rbp alone, says where the caller is.
  a.sub(x86::rsp, 8);
  a.mov(x86::rax, imm(reinterpret_cast<std::uint64_t>(&walk_from_callee)));
  a.call(x86::rax);
  a.add(x86::rsp, 8);
  a.pop(x86::rbx);
  const auto popped = static_cast<std::uint32_t>(a.offset()) + 1;
  a.pop(x86::rbp);
  a.ret();
  auto fn = jit->add_as<void (*)()>(code, {"walks", FrameDescription::frame_pointer(0, std::span(&popped, 1))});
  ASSERT_TRUE(fn) << fn.error().describe();
  const auto start = reinterpret_cast<std::uintptr_t>(*fn);
  run_jit(*fn);

  std::size_t jit_frame = g_from_callee_count;
  for (std::size_t i = 0; i < g_from_callee_count; ++i)
    if (g_from_callee[i] > start && g_from_callee[i] <= start + code.codeSize()) jit_frame = i;
  ASSERT_LT(jit_frame + 1, g_from_callee_count) << "no JIT frame, or nothing after it";
  auto caller = function_containing(g_from_callee[jit_frame + 1] - 1);
  ASSERT_TRUE(caller) << caller.error().describe();
  EXPECT_EQ(caller->start, reinterpret_cast<std::uintptr_t>(&run_jit));
  ASSERT_TRUE(jit->release(reinterpret_cast<void*>(*fn)));
}

// fork() copies walk_stack's reader count while another thread may be inside
// a lookup; that thread does not exist in the child, so the child's changes to
// the table must not wait for it (an alarm kills a child that hangs).
TEST(WalkStack, ForkChildChangesTheTableWhileTheParentsReaderWasMidLookup) {
  alignas(16) static std::uint8_t fake_code[256];
  const auto base = reinterpret_cast<std::uintptr_t>(fake_code);
  const std::vector<detail::FrameRow> frameless = *detail::frame_rows(FrameDescription::frameless(), 64);
  const detail::FrameToRegister looked_up{base, 64, frameless};
  detail::register_frames(std::span(&looked_up, 1));
  std::atomic<bool> stop{false};
  std::thread reader([&] {  // walk_stack's lookup, without the reads around it: always inside.
    detail::FrameRow row;
    std::uintptr_t start = 0;
    while (!stop.load()) (void)detail::unwind_table_find(base + 8, row, start);
  });
  int hung = 0;
  for (int i = 0; i < 20; ++i) {
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      alarm(10);
      const detail::FrameToRegister added{base + 128, 64, frameless};
      detail::register_frames(std::span(&added, 1));
      const code_events::ReleasedCode range{base + 128, 64};
      detail::deregister_frames(std::span(&range, 1));
      _exit(0);
    }
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    hung += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  stop.store(true);
  reader.join();
  const code_events::ReleasedCode range{base, 64};
  detail::deregister_frames(std::span(&range, 1));
  EXPECT_EQ(hung, 0) << "children that waited for a reader that does not exist in them";
}

}  // namespace
}  // namespace punch::runtime
