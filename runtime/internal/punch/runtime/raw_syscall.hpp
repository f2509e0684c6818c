// punch::runtime raw system calls — for punch's signal handlers.
//
// A handler must not call into libc for its system calls: the user may have
// hooked that very function (libc's syscall(), say), and a trap inside a
// handler that blocks SIGTRAP kills the process. These go straight to the
// kernel and return -errno on failure, leaving errno alone.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <ctime>

namespace punch::runtime {

//! The `syscall` instruction with up to four arguments. Returns -errno on failure.
inline long raw_syscall(long number, long a = 0, long b = 0, long c = 0, long d = 0) noexcept {
  long result;
  register long r10 asm("r10") = d;
  // clang-format off
  asm volatile("syscall"
               : "=a"(result)
               : "a"(number), "D"(a), "S"(b), "d"(c), "r"(r10)
               : "rcx", "r11", "memory");
  // clang-format on
  return result;
}

//! The caller's thread id.
inline pid_t raw_gettid() noexcept { return static_cast<pid_t>(raw_syscall(SYS_gettid)); }

//! Wakes every thread sleeping on `word`.
inline void futex_wake_all(const std::atomic<std::uint32_t>& word) noexcept {
  raw_syscall(SYS_futex, reinterpret_cast<long>(&word), FUTEX_WAKE_PRIVATE, INT32_MAX);
}

//! Sleeps while `word` holds `seen`, at most `nanoseconds` (< 1 s); may return early.
inline void futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t seen, long nanoseconds) noexcept {
  timespec ts{0, nanoseconds};
  raw_syscall(SYS_futex, reinterpret_cast<long>(&word), FUTEX_WAIT_PRIVATE, static_cast<long>(seen),
              reinterpret_cast<long>(&ts));
}

//! CLOCK_MONOTONIC in nanoseconds from the system call itself, not from
//! libc's clock_gettime (a program may have hooked it, and a change may be
//! rewriting it): for threads held or trapped while code changes.
inline std::int64_t raw_monotonic_ns() noexcept {
  timespec ts{};
  raw_syscall(SYS_clock_gettime, CLOCK_MONOTONIC, reinterpret_cast<long>(&ts));
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

static_assert(std::atomic<std::uint32_t>::is_always_lock_free && sizeof(std::atomic<std::uint32_t>) == 4,
              "a futex word is 32 bits");

}  // namespace punch::runtime
