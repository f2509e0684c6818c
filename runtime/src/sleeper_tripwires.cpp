// Tripwires over sleepers' resume addresses (see sleeper_tripwires.hpp).
#include "sleeper_tripwires.hpp"

#include <sys/syscall.h>

#include <atomic>
#include <span>

#include <punch/runtime/raw_syscall.hpp>
#include <punch/runtime/safe_read.hpp>
#include <punch/runtime/sync.hpp>

#include "proc_mem.hpp"

namespace punch::runtime::detail {
namespace {

// Distinct resume addresses ever guarded: a program sleeps in a few wrappers.
constexpr std::size_t kMaxTripwires = 256;

struct Entry {
  std::atomic<std::uintptr_t> address{0};
  std::atomic<std::uint8_t> original{0};  // The byte the trap replaced.
  std::atomic<bool> armed{false};
};

Entry g_entries[kMaxTripwires];
std::atomic<std::size_t> g_count{0};  // Entries [0, g_count) have their address set.

Entry* find(std::uintptr_t address) noexcept {
  const std::size_t count = g_count.load(std::memory_order_acquire);
  for (std::size_t i = 0; i < count; ++i)
    if (g_entries[i].address.load(std::memory_order_relaxed) == address) return &g_entries[i];
  return nullptr;
}

}  // namespace

bool arm_tripwire(CodeWriter& writer, std::uintptr_t pc, std::uint8_t trap) noexcept {
  std::uint8_t original = 0;
  if (safe_read_some(pc, std::span(&original, 1)) != 1) return false;
  Entry* entry = find(pc);
  if (entry == nullptr) {
    const std::size_t count = g_count.load(std::memory_order_relaxed);
    if (count == kMaxTripwires) return false;
    entry = &g_entries[count];
    entry->address.store(pc, std::memory_order_relaxed);
    g_count.store(count + 1, std::memory_order_release);
  }
  // Armed before the byte lands: a thread that meets it must find it so.
  entry->original.store(original, std::memory_order_relaxed);
  entry->armed.store(true, std::memory_order_seq_cst);
  if (writer.write(pc, std::span(&trap, 1))) return true;
  entry->armed.store(false, std::memory_order_seq_cst);
  return false;
}

bool tripwire_armed_at(std::uintptr_t pc) noexcept {
  const Entry* entry = find(pc);
  return entry != nullptr && entry->armed.load(std::memory_order_seq_cst);
}

void disarm_tripwires(CodeWriter& writer) noexcept {
  const std::size_t count = g_count.load(std::memory_order_acquire);
  for (std::size_t i = 0; i < count; ++i) {
    Entry& entry = g_entries[i];
    if (!entry.armed.load(std::memory_order_relaxed)) continue;
    const std::uint8_t original = entry.original.load(std::memory_order_relaxed);
    for (int attempt = 0; attempt < 3; ++attempt) {
      if (writer.write(entry.address.load(std::memory_order_relaxed), std::span(&original, 1))) {
        entry.armed.store(false, std::memory_order_seq_cst);
        break;
      }
    }
  }
}

Tripwire tripwire_at(std::uintptr_t address, std::uint8_t trap) noexcept {
  const Entry* entry = find(address);
  if (entry == nullptr) return Tripwire::kNone;
  if (entry->armed.load(std::memory_order_seq_cst)) return Tripwire::kArmed;
  // Put back since: the trap came before. A trap byte there now is someone else's.
  return *reinterpret_cast<const volatile std::uint8_t*>(address) != trap ? Tripwire::kRemoved : Tripwire::kNone;
}

bool restore_tripwire(std::uintptr_t address) noexcept {
  Entry* entry = find(address);
  if (entry == nullptr) return false;
  const int fd = proc_mem_fd_raw();
  if (fd < 0) return false;
  const std::uint8_t original = entry->original.load(std::memory_order_relaxed);
  if (raw_syscall(SYS_pwrite64, fd, reinterpret_cast<long>(&original), 1, static_cast<long>(address)) != 1)
    return false;
  entry->armed.store(false, std::memory_order_seq_cst);
  serialize_this_thread();
  return true;
}

}  // namespace punch::runtime::detail
