// Writing the code a hook needs: trampolines, relays and link stubs.
#include "hook_trampoline.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include <punch/disasm/relocate.hpp>
#include <punch/runtime/code_writer.hpp>

#include "code_names.hpp"

namespace punch::patcher::detail {
namespace {

constexpr std::size_t kAbsoluteJumpSize = 14;  // jmp [rip+0]; .quad

// Writes `bytes` and names the block after `target`; frees it again if the write fails.
Result<CodeBlock> place(runtime::CodeHeap& heap, std::uintptr_t address, std::size_t size,
                        const std::vector<std::uint8_t>& bytes, std::string_view role, std::uintptr_t target,
                        runtime::CodeKind kind) {
  if (auto written = heap.writer().write(address, bytes); !written) {
    (void)heap.free(address);  // Never handed out: nothing can run it.
    return tl::unexpected<Error>(std::move(written).error());
  }
  register_punch_code(address, size, role, target, kind);
  return CodeBlock{address, size};
}

// jmp rel32 from `from` to `to` when it reaches, else the 14-byte absolute jump.
std::vector<std::uint8_t> jump(std::uintptr_t from, std::uintptr_t to) {
  if (auto near = disasm::encode_jmp_rel32(from, to)) return *near;
  return disasm::encode_jmp_absolute(to);
}

constexpr int kArchShstkStatus = 0x5005;             // arch_prctl(ARCH_SHSTK_STATUS, &features), Linux 6.6.
constexpr unsigned long kArchShstkShstk = 1UL << 0;  // ARCH_SHSTK_SHSTK: the shadow stack is on.

}  // namespace

bool shadow_stack_enabled() noexcept {
  unsigned long features = 0;
  // EINVAL (older kernels, no CET): no shadow stack.
  if (::syscall(SYS_arch_prctl, kArchShstkStatus, &features) != 0) return false;
  return (features & kArchShstkShstk) != 0;
}

Result<CodeBlock> build_trampoline(const EntryPlan& plan, bool real_final_call, runtime::CodeHeap& heap) {
  disasm::CodeSpan stolen{plan.entry, plan.original};
  const bool call_as_jump = plan.ends_in_call && !real_final_call;
  std::size_t bound = sizeof(kEndbr64) + kAbsoluteJumpSize;
  if (plan.kind != HookEntryKind::kPatchableEntry) {
    auto relocated = disasm::relocated_size_bound(stolen);
    if (!relocated) return tl::unexpected<Error>(std::move(relocated).error());
    bound += *relocated;
  }

  // Data the stolen code reads must stay in reach; the jump back should.
  runtime::AddressWindow data_window;
  for (std::uintptr_t data : plan.data_targets)
    data_window = data_window.intersect(runtime::AddressWindow::rel32_reach(data));
  auto address = heap.allocate(bound, 16, data_window.intersect(runtime::AddressWindow::rel32_reach(plan.resume())));
  if (!address) address = heap.allocate(bound, 16, data_window);
  if (!address)
    return fail(address.error().code, at(plan.entry) +
                                          ": no memory for the trampoline within reach of the data the "
                                          "stolen instructions use: " +
                                          address.error().message);

  std::vector<std::uint8_t> bytes(std::begin(kEndbr64), std::end(kEndbr64));
  if (plan.kind != HookEntryKind::kPatchableEntry) {
    auto relocated = disasm::relocate(stolen, *address + bytes.size(), {.final_call_as_jump = call_as_jump});
    if (!relocated) {
      (void)heap.free(*address);
      return tl::unexpected<Error>(std::move(relocated).error());
    }
    bytes.insert(bytes.end(), relocated->bytes.begin(), relocated->bytes.end());
  }
  if (!call_as_jump) {  // A call made a jump returns to the original code itself.
    const auto back = jump(*address + bytes.size(), plan.resume());
    bytes.insert(bytes.end(), back.begin(), back.end());
  }
  return place(heap, *address, bound, bytes, "trampoline", plan.target, runtime::CodeKind::kTrampoline);
}

Result<CodeBlock> build_relay(std::uintptr_t jump_end, std::uintptr_t to, runtime::CodeHeap& heap) {
  auto address = heap.allocate(kAbsoluteJumpSize, 16, runtime::AddressWindow::rel32_reach(jump_end));
  if (!address) return tl::unexpected<Error>(std::move(address).error());
  return place(heap, *address, kAbsoluteJumpSize, disasm::encode_jmp_absolute(to), "relay", to,
               runtime::CodeKind::kRelay);
}

Result<CodeBlock> build_link_stub(std::uintptr_t to, runtime::CodeHeap& heap) {
  constexpr std::size_t size = sizeof(kEndbr64) + 5;
  auto address = heap.allocate(size, 16, runtime::AddressWindow::rel32_reach(to));
  if (!address) return tl::unexpected<Error>(std::move(address).error());
  std::vector<std::uint8_t> bytes(std::begin(kEndbr64), std::end(kEndbr64));
  auto link = disasm::encode_jmp_rel32(*address + kLinkJumpOffset, to);
  if (!link) {
    (void)heap.free(*address);
    return tl::unexpected<Error>(std::move(link).error());
  }
  bytes.insert(bytes.end(), link->begin(), link->end());
  return place(heap, *address, size, bytes, "link", to, runtime::CodeKind::kTrampoline);
}

std::vector<std::uint8_t> encode_absolute_entry(std::uintptr_t to) {
  std::vector<std::uint8_t> bytes(kAbsoluteEntrySize);
  const std::uint8_t head[] = {0xFF, 0x25, 0x02, 0x00, 0x00, 0x00, 0x48, 0xB8};  // jmp [rip+2]; movabs rax, imm64
  std::memcpy(bytes.data(), head, sizeof head);
  std::memcpy(bytes.data() + sizeof head, &to, sizeof to);
  return bytes;
}

}  // namespace punch::patcher::detail
