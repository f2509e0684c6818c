// punch::patcher::MidHook — a registry hook whose detour is a generated stub.
//
// The stub needs the address it resumes at (the hook's trampoline, or the link
// stub of a hook it wraps), which the registry fixes only while installing.
// So: allocate the stub's block, install the hook disabled with the block as
// its detour (nothing jumps there yet), write the stub, then enable.
#include <punch/patcher/mid_hook.hpp>

#include <atomic>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <punch/runtime/code_heap.hpp>

#include "code_names.hpp"
#include "function_extent.hpp"
#include "hook_planner.hpp"
#include "hook_registry.hpp"
#include "mid_hook_stub.hpp"

namespace punch::patcher {
namespace {

// Names the hooked address: in the message, when it does not begin with it,
// and as the error's address when it names none more precise.
Error naming(void* address, Error e) {
  if (e.address == 0) e.address = reinterpret_cast<std::uintptr_t>(address);
  if (e.message.rfind(at(address), 0) == 0) return e;
  return std::move(e).with_context("mid hook at " + at(address));
}

// The extent of the user's detour: a thread inside it returns into the stub.
std::vector<runtime::CodeRange> detour_ranges(MidDetour detour) {
  auto extent = detail::function_extent(reinterpret_cast<std::uintptr_t>(detour));
  if (!extent) return {};
  return {runtime::CodeRange{extent->start, extent->end}};
}

Result<std::pair<std::uint64_t, std::uintptr_t>> install_stub(void* address, MidDetour detour,
                                                              const MidHookOptions& options) {
  const auto site = reinterpret_cast<std::uintptr_t>(address);
  if (address == nullptr || detour == nullptr)
    return fail(ErrorCode::kInvalidArgument, at(site) + ": null address or detour");
  auto heap = runtime::CodeHeap::global();
  if (!heap) return tl::unexpected<Error>(std::move(heap).error());
  auto in_flight = std::make_shared<std::atomic<std::uint64_t>>(0);
  detail::MidStub spec{site,
                       reinterpret_cast<std::uintptr_t>(detour),
                       0,
                       reinterpret_cast<std::uintptr_t>(in_flight.get()),
                       options.vector_registers,
                       options.vector_state};
  auto size = detail::mid_stub_size_bound(spec);
  if (!size) return tl::unexpected<Error>(std::move(size).error());
  // Near the site, so the entry's jmp rel32 reaches the stub without a relay.
  auto stub = (*heap)->allocate(*size, 16, runtime::AddressWindow::rel32_reach(site + detail::kRel32JumpSize));
  if (!stub) stub = (*heap)->allocate(*size, 16);
  if (!stub) return tl::unexpected<Error>(std::move(stub).error());

  HookOptions hook_options;
  hook_options.transaction = options.transaction;
  hook_options.function = options.function;
  hook_options.prefer_patchable_entry = false;  // A nop run inside a function is code like any other.
  hook_options.enabled = false;
  const detail::GeneratedDetour generated{{*stub, *size}, detour_ranges(detour), in_flight};
  auto id = detail::registry_install(site, *stub, hook_options, nullptr, generated);  // Owns the block now.
  if (!id) return tl::unexpected<Error>(std::move(id).error());

  const HookInfo info = detail::registry_info(*id);
  spec.rip = info.entry;
  spec.resume = info.trampoline;
  auto bytes = detail::emit_mid_stub(spec, *stub);
  if (bytes && bytes->size() > *size) bytes = fail(ErrorCode::kInvalidArgument, at(*stub) + ": stub outgrew its bound");
  Status ready = bytes ? (*heap)->writer().write(*stub, *bytes) : Status(tl::unexpected<Error>(bytes.error()));
  if (ready) detail::register_punch_code(*stub, *size, "mid_hook", site, runtime::CodeKind::kMidHookStub);
  if (ready && options.enabled) ready = detail::registry_set_enabled(*id, true);
  if (!ready) {
    (void)detail::registry_remove(*id);  // Disabled: nothing changes in the function's bytes.
    return tl::unexpected<Error>(std::move(ready).error());
  }
  return std::pair{*id, *stub};
}

}  // namespace

MidHook::~MidHook() {
  if (installed()) (void)remove();  // Documented: errors are dropped here.
}

MidHook::MidHook(MidHook&& other) noexcept : id_(std::exchange(other.id_, 0)), stub_(std::exchange(other.stub_, 0)) {}

MidHook& MidHook::operator=(MidHook&& other) noexcept {
  if (this != &other) {
    if (installed()) (void)remove();
    id_ = std::exchange(other.id_, 0);
    stub_ = std::exchange(other.stub_, 0);
  }
  return *this;
}

Result<MidHook> MidHook::install(void* address, MidDetour detour, MidHookOptions options) {
  auto installed = install_stub(address, detour, options);
  if (!installed) return tl::unexpected<Error>(naming(address, std::move(installed).error()));
  return MidHook(installed->first, installed->second);
}

Result<MidHook> MidHook::install(const SymbolRef& symbol, std::size_t offset, MidDetour detour,
                                 MidHookOptions options) {
  auto function = resolve_symbol(symbol);
  if (!function) return tl::unexpected<Error>(std::move(function).error());
  // The offset must stay inside the function: past its end lies someone else's code.
  const auto start = reinterpret_cast<std::uintptr_t>(*function);
  auto extent = options.function ? Result<disasm::FunctionExtent>(*options.function) : detail::function_extent(start);
  if (extent && offset >= extent->end - start)
    return fail(ErrorCode::kInvalidArgument, at(start + offset) + ": offset " + std::to_string(offset) +
                                                 " lies past `" + symbol.name + "` [" + at(extent->start) + ", " +
                                                 at(extent->end) + ")");
  return install(reinterpret_cast<void*>(start + offset), detour, options);
}

Status MidHook::enable() {
  if (!installed()) return fail(ErrorCode::kNotOwned, "enable: the mid hook handle is empty");
  return detail::registry_set_enabled(id_, true);
}

Status MidHook::disable() {
  if (!installed()) return fail(ErrorCode::kNotOwned, "disable: the mid hook handle is empty");
  return detail::registry_set_enabled(id_, false);
}

Status MidHook::remove() {
  if (!installed()) return fail(ErrorCode::kNotOwned, "remove: the mid hook handle is empty");
  PUNCH_TRY(detail::registry_remove(id_));
  id_ = 0;
  stub_ = 0;
  return {};
}

bool MidHook::enabled() const noexcept { return installed() && detail::registry_enabled(id_); }

MidHookInfo MidHook::info() const noexcept {
  if (!installed()) return {};
  const HookInfo hook = detail::registry_info(id_);
  return {hook.target, hook.entry, hook.stolen, stub_, hook.trampoline};
}

}  // namespace punch::patcher
