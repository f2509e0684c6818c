#include "registered_frames.hpp"

#include <map>
#include <mutex>
#include <vector>

#include <punch/runtime/fork_safe_mutex.hpp>

#include "eh_frame_writer.hpp"
#include "prologue_reader.hpp"
#include "unwind_table.hpp"

// libgcc (unwind-dw2-fde.c): `begin` is the start of a .eh_frame-like list of
// CIEs and FDEs ending in a zero word. (LLVM's libunwind takes one FDE instead;
// punch links against libgcc_s, as g++ and Debian's clang do.)
extern "C" void __register_frame(void* begin);
extern "C" void __deregister_frame(void* begin);

namespace punch::runtime::detail {
namespace {

struct Registry {
  ForkSafeMutex mutex{LockRank::kDebugInfo};
  std::map<std::uintptr_t, std::vector<std::uint8_t>> blocks;  // By function start; libgcc holds data().
};

Registry& registry() {
  static Registry* r = new Registry;  // Never destroyed: libgcc may hold blocks until exit.
  return *r;
}
// Built while the program loads, not under a function-local static's guard a
// fork could copy taken (see "Fork safety" in docs/design.md).
[[maybe_unused]] const bool g_registry_built = (static_cast<void>(registry()), true);

}  // namespace

void register_frames(std::span<const FrameToRegister> functions) {
  std::vector<UnwindTableEntry> table;
  std::vector<std::pair<std::uintptr_t, std::vector<std::uint8_t>>> blocks;
  for (const FrameToRegister& fn : functions) {
    if (fn.rows.empty()) continue;
    const FunctionFrame frame{fn.start, fn.size, fn.rows};
    blocks.emplace_back(fn.start, write_eh_frame(std::span(&frame, 1)));
    table.push_back(UnwindTableEntry{fn.start, fn.size, {fn.rows.begin(), fn.rows.end()}});
  }
  if (blocks.empty()) return;
  unwind_table_add(std::move(table));
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  for (auto& [start, block] : blocks) {
    auto& slot = r.blocks[start];
    if (!slot.empty()) __deregister_frame(slot.data());  // Registered twice without a release: the new one wins.
    __register_frame(block.data());
    slot = std::move(block);
  }
}

void deregister_frames(std::span<const code_events::ReleasedCode> ranges) {
  unwind_table_remove(ranges);  // Its lock and ours are leaves: never held together.
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  for (const auto& range : ranges) {
    auto it = r.blocks.lower_bound(range.address);
    while (it != r.blocks.end() && it->first - range.address < range.size) {
      __deregister_frame(it->second.data());
      it = r.blocks.erase(it);
    }
  }
}

std::size_t registered_frame_count() {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  return r.blocks.size();
}

std::vector<FrameRow> frame_rows_of(CodeKind kind, std::span<const std::uint8_t> bytes) {
  FrameDescription description;  // A relay: CFA = rsp + 8 throughout.
  if (kind == CodeKind::kTrampoline)
    description = describe_copied_prologue(bytes);
  else if (kind != CodeKind::kRelay)
    return {};
  auto rows = frame_rows(description, bytes.size());
  return rows ? std::move(*rows) : std::vector<FrameRow>{};
}

}  // namespace punch::runtime::detail

namespace punch::runtime::code_events {

const Sink kUnwindSink = {
    [](std::span<const AddedCode> batch) {
      std::vector<detail::FrameToRegister> frames;
      for (const AddedCode& code : batch)
        if (!code.frame_rows.empty()) frames.push_back({code.address, code.size, code.frame_rows});
      detail::register_frames(frames);
    },
    [](std::span<const ReleasedCode> batch) { detail::deregister_frames(batch); },
};

}  // namespace punch::runtime::code_events
