#include <punch/runtime/serialize.hpp>

#include <cpuid.h>

#include <atomic>
#include <cstdint>

namespace punch::runtime {
namespace {

// SerializeMethod + 1; 0 while not known yet.
std::atomic<int> g_cpu_best{0};  // The CPU's best method, decided at first use.
std::atomic<int> g_forced{0};    // A test's choice, or 0.

SerializeMethod decode(int stored) { return static_cast<SerializeMethod>(stored - 1); }
int encode(SerializeMethod method) { return static_cast<int>(method) + 1; }

// Runs cpuid (which serializes this thread) to learn whether the CPU has
// SERIALIZE (CPUID.7.0:EDX[14]). Every thread computes the same answer, so a
// race between first users needs no lock.
SerializeMethod decide_cpu_best() noexcept {
  unsigned a = 0, b = 0, c = 0, d = 0;
  const bool has_serialize = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 14)) != 0;
  const SerializeMethod best = has_serialize ? SerializeMethod::kSerialize : SerializeMethod::kIret;
  g_cpu_best.store(encode(best), std::memory_order_relaxed);
  return best;
}

// Whether this thread runs with a user-mode shadow stack now (the kernel
// reports the same per thread as arch_prctl(ARCH_SHSTK_STATUS)). RDSSP reads
// the shadow-stack pointer where one is enabled and is a NOP everywhere else,
// on every x86-64 CPU with or without CET (it is in the 0f 1e hint-NOP space,
// like endbr64), so a zero means none. Asked at each call, it is right for
// threads that enable a shadow stack later, costs no system call, and is
// async-signal-safe.
bool shadow_stack_enabled() noexcept {
  std::uint64_t ssp = 0;
  asm volatile("rdsspq %0" : "+r"(ssp));
  return ssp != 0;
}

SerializeMethod cpu_best() noexcept {
  const int stored = g_cpu_best.load(std::memory_order_relaxed);
  return stored != 0 ? decode(stored) : decide_cpu_best();
}

SerializeMethod method_for_this_thread(SerializeMethod best) noexcept {
  const int forced = g_forced.load(std::memory_order_relaxed);
  const SerializeMethod method = forced != 0 ? decode(forced) : best;
  // iretq with a shadow stack enabled pops a return address from it and faults.
  if (method == SerializeMethod::kIret && shadow_stack_enabled()) return SerializeMethod::kCpuid;
  return method;
}

void run_serialize() noexcept { asm volatile(".byte 0x0f, 0x01, 0xe8" ::: "memory"); }

void run_cpuid() noexcept {
  unsigned a = 0, b = 0, c = 0, d = 0;
  asm volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d)::"memory");
}

// An iretq to the next instruction: core-serializing at every privilege
// level, and no VM exit. The frame (ss, rsp, rflags, cs, rip) is built below
// the 128-byte red zone, where a leaf function this is inlined into may keep
// data, on a 16-byte boundary, and gives back exactly the rsp and rflags it
// found. Only registers and the stack below the red zone are touched, so a
// signal handler may run it (a signal arriving halfway is delivered below it).
void run_iret() noexcept {
  std::uint64_t entry_rsp, flags, scratch;
  asm volatile(
      "mov %%rsp, %[entry_rsp]\n\t"
      "lea -128(%%rsp), %%rsp\n\t"  // Over the red zone; lea leaves the flags alone.
      "pushfq\n\t"
      "pop %[flags]\n\t"
      "and $-16, %%rsp\n\t"  // Changes the flags: they are saved already.
      "mov %%ss, %k[scratch]\n\t"
      "push %[scratch]\n\t"    // ss
      "push %[entry_rsp]\n\t"  // rsp
      "push %[flags]\n\t"      // rflags
      "mov %%cs, %k[scratch]\n\t"
      "push %[scratch]\n\t"  // cs
      "lea 1f(%%rip), %[scratch]\n\t"
      "push %[scratch]\n\t"  // rip
      "iretq\n"
      "1:"
      : [entry_rsp] "=&r"(entry_rsp), [flags] "=&r"(flags), [scratch] "=&r"(scratch)
      :
      : "memory");
}

}  // namespace

std::string_view to_string(SerializeMethod method) noexcept {
  switch (method) {
    case SerializeMethod::kSerialize: return "serialize";
    case SerializeMethod::kIret: return "iret";
    case SerializeMethod::kCpuid: return "cpuid";
  }
  return "unknown";
}

SerializeMethod serialize_method() noexcept { return method_for_this_thread(cpu_best()); }

void serialize_this_thread() noexcept {
  const int stored = g_cpu_best.load(std::memory_order_relaxed);
  if (stored == 0) {
    decide_cpu_best();  // Its cpuid serialized this thread.
    return;
  }
  switch (method_for_this_thread(decode(stored))) {
    case SerializeMethod::kSerialize: return run_serialize();
    case SerializeMethod::kIret: return run_iret();
    case SerializeMethod::kCpuid: return run_cpuid();
  }
}

Status testing::force_serialize_method(std::optional<SerializeMethod> method) {
  if (method == SerializeMethod::kSerialize && cpu_best() != SerializeMethod::kSerialize)
    return fail(ErrorCode::kUnsupported,
                "force_serialize_method: this CPU has no SERIALIZE (CPUID.7.0:EDX[14] is clear)");
  g_forced.store(method ? encode(*method) : 0, std::memory_order_relaxed);
  return {};
}

}  // namespace punch::runtime
