#include "parked_threads.hpp"

#include <atomic>
#include <cstdint>

#include <punch/runtime/raw_syscall.hpp>
#include <punch/runtime/serialize.hpp>

namespace punch::runtime::detail {
namespace {

// One word per slot: the tid in the high half, the state in the low half.
enum State : std::uint32_t { kFree = 0, kParked = 1, kClaimed = 2 };

constexpr int kSlots = 64;  // Threads forking at the same moment; more are simply not parked.
constinit std::atomic<std::uint64_t> g_slots[kSlots] = {};
constinit std::atomic<std::uint32_t> g_releases{0};  // Futex word: bumped when claimed threads may leave.

constexpr std::uint64_t word(pid_t tid, State state) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(tid)) << 32) | state;
}
constexpr State state_of(std::uint64_t w) { return static_cast<State>(w & 0xffffffffu); }
constexpr pid_t tid_of(std::uint64_t w) { return static_cast<pid_t>(w >> 32); }

}  // namespace

ParkedInPunch::ParkedInPunch() noexcept {
  const std::uint64_t parked = word(raw_gettid(), kParked);
  for (int i = 0; i < kSlots; ++i) {
    std::uint64_t expected = word(0, kFree);
    if (g_slots[i].compare_exchange_strong(expected, parked, std::memory_order_acq_rel)) {
      slot_ = i;
      return;
    }
  }
}

ParkedInPunch::~ParkedInPunch() {
  if (slot_ < 0) return;
  std::atomic<std::uint64_t>& slot = g_slots[slot_];
  bool was_claimed = false;
  for (;;) {
    const std::uint32_t releases = g_releases.load(std::memory_order_acquire);
    std::uint64_t w = slot.load(std::memory_order_acquire);
    if (state_of(w) == kParked && slot.compare_exchange_strong(w, word(0, kFree), std::memory_order_acq_rel)) break;
    if (state_of(w) != kClaimed) continue;  // It changed under us: look again.
    was_claimed = true;
    futex_wait(g_releases, releases, 100'000'000);  // A hold is never longer; woken by its release.
  }
  if (was_claimed) serialize_this_thread();  // Code may have changed while we counted as held.
}

void claim_parked_threads(std::vector<pid_t>& tids) {
  for (std::atomic<std::uint64_t>& slot : g_slots) {
    std::uint64_t w = slot.load(std::memory_order_acquire);
    if (state_of(w) == kParked && slot.compare_exchange_strong(w, word(tid_of(w), kClaimed), std::memory_order_acq_rel))
      tids.push_back(tid_of(w));
  }
}

void release_parked_threads() noexcept {
  bool any = false;
  for (std::atomic<std::uint64_t>& slot : g_slots) {
    std::uint64_t w = slot.load(std::memory_order_acquire);
    if (state_of(w) == kClaimed) {
      slot.store(word(tid_of(w), kParked), std::memory_order_release);
      any = true;
    }
  }
  if (!any) return;
  g_releases.fetch_add(1, std::memory_order_acq_rel);
  futex_wake_all(g_releases);
}

void forget_parked_threads() noexcept {
  for (std::atomic<std::uint64_t>& slot : g_slots) slot.store(word(0, kFree), std::memory_order_relaxed);
}

}  // namespace punch::runtime::detail
