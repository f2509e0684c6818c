#include <punch/runtime/jit.hpp>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include <punch/runtime/sync.hpp>

#include "code_events.hpp"
#include "frame_rows.hpp"

namespace punch::runtime {
namespace {

std::string asmjit_error(const char* what, asmjit::Error err) {
  return std::string(what) + ": " + asmjit::DebugUtils::errorAsString(err);
}

// Flattens the holder and resolves its links; returns the size to allocate.
Result<std::size_t> prepare(asmjit::CodeHolder& code) {
  if (asmjit::Error err = code.flatten()) return fail(ErrorCode::kInvalidArgument, asmjit_error("asmjit flatten", err));
  if (asmjit::Error err = code.resolveUnresolvedLinks())
    return fail(ErrorCode::kInvalidArgument, asmjit_error("asmjit resolveUnresolvedLinks", err));
  std::size_t size = code.codeSize();
  if (size == 0) return fail(ErrorCode::kInvalidArgument, "asmjit CodeHolder holds no code");
  return size;
}

// The alignment the holder's sections ask for (at least 16).
std::size_t alignment_of(const asmjit::CodeHolder& code) {
  std::size_t align = 16;
  for (const asmjit::Section* section : code.sections()) align = std::max<std::size_t>(align, section->alignment());
  return align;
}

// Relocates the holder to `address` and copies it into `out` (sized to the allocation).
Status relocate_into(asmjit::CodeHolder& code, std::uintptr_t address, std::span<std::uint8_t> out) {
  if (asmjit::Error err = code.relocateToBase(address))
    return fail(ErrorCode::kCannotRelocate, address, asmjit_error("asmjit relocateToBase", err));
  // relocateToBase may shrink the code (unused address-table entries), never grow it.
  const std::size_t size = code.codeSize();
  if (size > out.size())
    return fail(ErrorCode::kCannotRelocate, address,
                "code grew to " + std::to_string(size) + " bytes while relocating");
  if (asmjit::Error err = code.copyFlattenedData(out.data(), size, asmjit::CopySectionFlags::kPadSectionBuffer))
    return fail(ErrorCode::kInvalidArgument, address, asmjit_error("asmjit copyFlattenedData", err));
  return {};
}

// Tells every tool about the new functions, naming unnamed ones "jit:0x<address>".
void announce(std::span<const std::uintptr_t> addresses, std::span<const std::size_t> sizes,
              std::span<const JitFunctionInfo> infos, std::span<const std::vector<detail::FrameRow>> rows,
              std::span<const std::uint8_t> staging) {
  std::vector<std::string> generated(addresses.size());
  std::vector<code_events::AddedCode> added(addresses.size());
  for (std::size_t i = 0; i < addresses.size(); ++i) {
    const JitFunctionInfo* info = infos.empty() ? nullptr : &infos[i];
    std::string_view name = info ? info->name : std::string_view{};
    if (name.empty()) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "jit:0x%lx", static_cast<unsigned long>(addresses[i]));
      name = generated[i] = buf;
    }
    added[i] = {
        addresses[i], sizes[i], name, CodeKind::kJit, staging.subspan(addresses[i] - addresses.front(), sizes[i]),
        rows[i]};
  }
  code_events::code_added(added);
}

}  // namespace

Result<void*> Jit::add(asmjit::CodeHolder& code, const JitFunctionInfo& info, AddressWindow window) {
  asmjit::CodeHolder* one[] = {&code};
  auto batch = add_batch(one, std::span(&info, 1), window);
  if (!batch) return tl::unexpected(std::move(batch).error());
  return batch->front();
}

Result<std::vector<void*>> Jit::add_batch(std::span<asmjit::CodeHolder* const> codes,
                                          std::span<const JitFunctionInfo> infos, AddressWindow window) {
  if (codes.empty()) return std::vector<void*>{};
  if (!infos.empty() && infos.size() != codes.size())
    return fail(ErrorCode::kInvalidArgument, "Jit::add_batch: " + std::to_string(infos.size()) + " infos for " +
                                                 std::to_string(codes.size()) + " functions (give none or one each)");
  std::vector<std::size_t> sizes;
  sizes.reserve(codes.size());
  std::size_t align = 16;
  for (asmjit::CodeHolder* code : codes) {
    if (!code) return fail(ErrorCode::kInvalidArgument, "Jit::add_batch: null CodeHolder");
    auto size = prepare(*code);
    if (!size) return tl::unexpected(std::move(size).error());
    sizes.push_back(*size);
    align = std::max(align, alignment_of(*code));
  }

  // One run of consecutive blocks: one staging buffer, one write, one sync.
  auto addresses = heap_.allocate_run(sizes, align, window);
  if (!addresses) return tl::unexpected(std::move(addresses).error());
  auto release_all = [&] { (void)heap_.free_batch(*addresses); };
  const std::uintptr_t base = addresses->front();
  const std::uintptr_t end = addresses->back() + *heap_.allocation_size(addresses->back());
  std::vector<std::uint8_t> staging(end - base, 0xCC);  // Padding between functions stays int3.
  for (std::size_t i = 0; i < codes.size(); ++i) {
    std::uintptr_t a = (*addresses)[i];
    if (Status ok = relocate_into(*codes[i], a, std::span(staging).subspan(a - base, sizes[i])); !ok) {
      release_all();
      return tl::unexpected(std::move(ok).error());
    }
  }
  // A frame description that cannot be followed fails the add before any code
  // is written. The rows are built here once and every tool gets them.
  std::vector<std::vector<detail::FrameRow>> rows(codes.size());
  for (std::size_t i = 0; i < infos.size(); ++i) {
    if (!infos[i].frame) continue;
    auto built = detail::frame_rows(*infos[i].frame, codes[i]->codeSize());
    if (!built) {
      release_all();
      return fail(ErrorCode::kInvalidArgument, (*addresses)[i],
                  "function " + std::to_string(i) + ": " + built.error().message);
    }
    rows[i] = std::move(*built);
  }
  if (Status ok = heap_.writer().write(base, staging); !ok) {
    release_all();
    return tl::unexpected(std::move(ok).error());
  }
  if (Status ok = sync_all_threads(); !ok) {
    release_all();
    return tl::unexpected(std::move(ok).error());
  }
  // relocateToBase may have shrunk a function: tools see the bytes it really has.
  for (std::size_t i = 0; i < codes.size(); ++i) sizes[i] = codes[i]->codeSize();
  announce(*addresses, sizes, infos, rows, staging);
  std::vector<void*> out;
  out.reserve(addresses->size());
  for (std::uintptr_t a : *addresses) out.push_back(reinterpret_cast<void*>(a));
  return out;
}

Status Jit::release(void* function) { return heap_.free(reinterpret_cast<std::uintptr_t>(function)); }

Status Jit::release_batch(std::span<void* const> functions) {
  std::vector<std::uintptr_t> addresses;
  addresses.reserve(functions.size());
  for (void* fn : functions) addresses.push_back(reinterpret_cast<std::uintptr_t>(fn));
  return heap_.free_batch(addresses);  // Tells every tool before the space can be reused.
}

}  // namespace punch::runtime
