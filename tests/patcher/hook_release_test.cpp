// Releasing a removed hook's code: a trampoline is kept while a thread is
// parked inside it, or inside the detour that is about to call it, and freed
// once the thread has left.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>

#include <punch/patcher/hook.hpp>
#include <punch/runtime/code_heap.hpp>

#include "hook_targets.hpp"
#include "memory_snapshot.hpp"

namespace punch::patcher {
namespace {

void set_flag(unsigned char& flag, unsigned char value) { __atomic_store_n(&flag, value, __ATOMIC_SEQ_CST); }
bool flag(const unsigned char& f) { return __atomic_load_n(&f, __ATOMIC_SEQ_CST) != 0; }

runtime::CodeHeap& heap() {
  auto h = runtime::CodeHeap::global();
  EXPECT_TRUE(h) << h.error().describe();
  return **h;
}

// Hooks `target` with the parking detour: installed disabled, the trampoline published, then enabled.
Result<Hook> hook_parking(Fn target) {
  HookOptions options;
  options.enabled = false;
  auto hook = Hook::install(reinterpret_cast<void*>(target), reinterpret_cast<void*>(hook_parking_detour), options);
  if (!hook) return hook;
  __atomic_store_n(&hook_parking_original, hook->trampoline(), __ATOMIC_SEQ_CST);
  if (auto s = hook->enable(); !s) return tl::unexpected<Error>(s.error());
  return hook;
}

// A thread spinning inside the detour has not loaded the trampoline pointer
// yet: the removed hook's trampoline must survive until it has called it.
TEST(HookRelease, TrampolineIsKeptWhileAThreadIsInsideTheDetour) {
  test::MemorySnapshot before(reinterpret_cast<void*>(hook_target_square), 32);
  set_flag(hook_parking_go, 0);
  set_flag(hook_parking_arrived, 0);
  auto hook = hook_parking(hook_target_square);
  ASSERT_TRUE(hook) << hook.error().describe();
  const std::uintptr_t trampoline = hook->info().trampoline;

  std::atomic<long> result{0};
  std::thread parked([&] { result = call(hook_target_square, 5); });
  while (!flag(hook_parking_arrived)) std::this_thread::yield();

  ASSERT_TRUE(hook->remove());
  EXPECT_EQ(before.differences(), "");
  auto released = release_retired_hook_code();
  ASSERT_TRUE(released) << released.error().describe();
  EXPECT_TRUE(heap().owns(trampoline)) << "freed while a thread is inside the detour that calls it";

  set_flag(hook_parking_go, 1);  // The thread now calls the removed hook's trampoline.
  parked.join();
  EXPECT_EQ(result.load(), 5 * 5 - 1 + 1000);
  released = release_retired_hook_code();
  ASSERT_TRUE(released) << released.error().describe();
  EXPECT_FALSE(heap().owns(trampoline)) << "still retained after the thread left";
}

// A userfaultfd page whose first touch blocks until the test fills it.
class BlockingPage {
 public:
  BlockingPage() {
    fd_ = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY));
    if (fd_ < 0) fd_ = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC));
    if (fd_ < 0) {
      fail("userfaultfd");
      return;
    }
    uffdio_api api{};
    api.api = UFFD_API;
    if (::ioctl(fd_, UFFDIO_API, &api) != 0) {
      fail("UFFDIO_API");
      return;
    }
    page_ = ::mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page_ == MAP_FAILED) {
      fail("mmap");
      return;
    }
    uffdio_register reg{};
    reg.range = {reinterpret_cast<std::uint64_t>(page_), kPage};
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    if (::ioctl(fd_, UFFDIO_REGISTER, &reg) != 0) {
      fail("UFFDIO_REGISTER");
      return;
    }
  }
  ~BlockingPage() {
    if (page_ != MAP_FAILED) ::munmap(page_, kPage);
    if (fd_ >= 0) ::close(fd_);
  }
  const std::string& unavailable() const { return why_; }
  long address() const { return reinterpret_cast<long>(page_); }

  //! Waits until a thread is blocked on the page (reads the fault event).
  bool wait_for_fault() {
    uffd_msg msg{};
    return ::read(fd_, &msg, sizeof msg) == static_cast<ssize_t>(sizeof msg) && msg.event == UFFD_EVENT_PAGEFAULT;
  }
  //! Fills the page with `value` in every quadword and wakes the blocked thread.
  bool fill(std::uint64_t value) {
    alignas(4096) static std::uint64_t source[kPage / 8];
    for (auto& q : source) q = value;
    uffdio_copy copy{};
    copy.dst = reinterpret_cast<std::uint64_t>(page_);
    copy.src = reinterpret_cast<std::uint64_t>(source);
    copy.len = kPage;
    return ::ioctl(fd_, UFFDIO_COPY, &copy) == 0;
  }

 private:
  static constexpr std::size_t kPage = 4096;
  void fail(const char* what) { why_ = std::string(what) + ": " + std::strerror(errno); }
  int fd_ = -1;
  void* page_ = MAP_FAILED;
  std::string why_;
};

// A thread blocked on a page fault at the stolen load, inside the trampoline:
// the trampoline is kept until the fault is resolved and the thread returned.
TEST(HookRelease, TrampolineIsKeptWhileAThreadIsBlockedInsideIt) {
  BlockingPage page;
  if (!page.unavailable().empty())
    GTEST_SKIP() << "no userfaultfd to hold a thread inside the trampoline: " << page.unavailable();
  test::MemorySnapshot before(reinterpret_cast<void*>(hook_target_load), 16);
  set_flag(hook_parking_go, 1);  // The detour does not spin: the thread goes on into the trampoline.
  auto hook = hook_parking(hook_target_load);
  ASSERT_TRUE(hook) << hook.error().describe();
  const std::uintptr_t trampoline = hook->info().trampoline;

  std::atomic<long> result{0};
  std::thread blocked([&] { result = call(hook_target_load, page.address()); });
  ASSERT_TRUE(page.wait_for_fault());

  ASSERT_TRUE(hook->remove());
  EXPECT_EQ(before.differences(), "");
  auto released = release_retired_hook_code();
  ASSERT_TRUE(released) << released.error().describe();
  EXPECT_TRUE(heap().owns(trampoline)) << "freed while a thread is blocked inside it";

  ASSERT_TRUE(page.fill(41));
  blocked.join();
  EXPECT_EQ(result.load(), 41 + 1 + 1000);
  released = release_retired_hook_code();
  ASSERT_TRUE(released) << released.error().describe();
  EXPECT_FALSE(heap().owns(trampoline)) << "still retained after the thread left";
}

}  // namespace
}  // namespace punch::patcher
