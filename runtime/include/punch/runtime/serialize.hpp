// punch::runtime serialize — make the calling thread drop instruction bytes it
// fetched before code was changed.
//
// x86 keeps instruction fetch coherent with data writes, but a core may run
// bytes it fetched before another thread's write until it executes a
// core-serializing instruction. Which instruction is cheap depends on the host:
// `cpuid` is a VM exit under every hypervisor (about 6 µs on a cloud VM), so
// punch prefers `serialize` where the CPU has it and otherwise an `iretq` to
// the next instruction, as the kernel's own sync_core() does. A thread with a
// user-mode shadow stack cannot `iretq` (it would fault): it uses `cpuid`.
#pragma once

#include <optional>
#include <string_view>

#include <punch/result.hpp>

namespace punch::runtime {

//! The instruction that serializes the calling thread.
enum class SerializeMethod {
  kSerialize,  //!< SERIALIZE (0f 01 e8), where CPUID.7.0:EDX[14] says the CPU has it.
  kIret,       //!< An iretq to the next instruction, built on the stack below the red zone.
  kCpuid,      //!< cpuid (leaf 0): always works, but is a VM exit in a virtual machine.
};

//! "serialize", "iret" or "cpuid".
std::string_view to_string(SerializeMethod method) noexcept;

//! The method serialize_this_thread() uses on the calling thread now: the
//! CPU's best (decided once) unless a test forced another, and never kIret on
//! a thread whose shadow stack is enabled.
SerializeMethod serialize_method() noexcept;

//! Executes a core-serializing instruction on the calling thread.
//! Async-signal-safe: no system call, no lock, nothing written below the red zone.
void serialize_this_thread() noexcept;

namespace testing {

//! Makes serialize_this_thread() use `method` in every thread (nullopt: back
//! to the CPU's best). kSerialize on a CPU without it is refused (kUnsupported).
//! A thread with a shadow stack still uses cpuid when kIret is forced.
Status force_serialize_method(std::optional<SerializeMethod> method);

}  // namespace testing
}  // namespace punch::runtime
