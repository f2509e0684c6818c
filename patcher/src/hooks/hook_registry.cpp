// The hook registry: one chain per hooked target, changed only by whole transactions.
//
// A chain owns the target's trampoline and its hooks, innermost first. Every
// operation edits the chain's model, computes the bytes every jump should hold
// (the entry jump leads to the outermost enabled detour; each chained hook's
// link stub leads to the next enabled detour inward, or to the trampoline),
// and commits the differences as ONE Transaction. If the commit fails, the
// model is restored and any code allocated for it is freed: memory is as it was.
#include "hook_registry.hpp"

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <punch/disasm/relocate.hpp>
#include <punch/patcher/transaction.hpp>
#include <punch/runtime/code_heap.hpp>
#include <punch/runtime/maps.hpp>
#include <punch/runtime/safe_read.hpp>
#include <punch/runtime/threads.hpp>

#include "function_extent.hpp"
#include "hook_chain.hpp"
#include "hook_planner.hpp"
#include "hook_trampoline.hpp"
#include "out_of_line.hpp"

namespace punch::patcher::detail {

HookRegistry& hook_registry() {
  static HookRegistry* r = new HookRegistry;
  return *r;
}

FoundHook lookup(HookRegistry& r, std::uint64_t id) {
  auto t = r.targets.find(id);
  if (t == r.targets.end()) return {};
  Chain& chain = *r.chains.at(t->second);
  for (HookRecord& h : chain.hooks)
    if (h.id == id) return {&chain, &h};
  return {};
}

namespace {

// Built while the program loads, before any thread can fork: a fork in the
// middle of the first hook_registry() call would leave the child's copy of its
// initialization guard taken forever.
[[maybe_unused]] const bool g_registry_built = (hook_registry(), true);

constexpr std::uint8_t kInt3 = 0xCC;

Result<runtime::CodeHeap*> heap() { return runtime::CodeHeap::global(); }

Status not_installed(std::uint64_t id) {
  return fail(ErrorCode::kNotOwned, "hook #" + std::to_string(id) + " is not installed");
}

// Code allocated during one operation, freed again if the operation fails.
struct NewCode {
  std::vector<CodeBlock> blocks;
  void free_all() {
    auto h = heap();
    for (auto& b : blocks)
      if (h) (void)(*h)->free(b.address);
    blocks.clear();
  }
};

// The 5 bytes that make `point` jump to `to`, through a relay when `to` is out of reach.
Result<std::vector<std::uint8_t>> route(JumpPoint& point, std::uintptr_t to, NewCode& fresh) {
  if (auto direct = disasm::encode_jmp_rel32(point.address, to)) return *direct;
  auto relay = point.relays.find(to);
  if (relay == point.relays.end()) {
    auto h = heap();
    if (!h) return tl::unexpected<Error>(std::move(h).error());
    auto built = build_relay(point.address + kRel32JumpSize, to, **h);
    if (!built)
      return fail(built.error().code, at(point.address) + ": no memory within rel32 reach for a relay to " + at(to) +
                                          ": " + built.error().message);
    fresh.blocks.push_back(*built);
    relay = point.relays.emplace(to, *built).first;
  }
  return disasm::encode_jmp_rel32(point.address, relay->second.address);
}

// Drops relays created for a failed operation from a jump point's map.
void forget(JumpPoint& point, const NewCode& fresh) {
  for (const auto& b : fresh.blocks)
    for (auto it = point.relays.begin(); it != point.relays.end();)
      it = it->second.address == b.address ? point.relays.erase(it) : std::next(it);
}

disasm::FunctionExtent block_extent(const CodeBlock& b) {
  return {b.address, b.address + b.size, disasm::FunctionExtent::Source::kCaller};
}

// What reconcile does with the transaction it builds.
enum class Reconcile {
  kCommit,  // Commit it: memory and the model then match.
  kCheck,   // Only check that a commit would be accepted (validation, out-of-line copies); change nothing.
};

// Commits the bytes the chain's model asks for, as one transaction. On failure nothing changed.
Status reconcile(Chain& chain, const TransactionOptions& options, Reconcile mode = Reconcile::kCommit) {
  Transaction tx(options);
  NewCode fresh;
  std::vector<std::pair<JumpPoint*, std::vector<std::uint8_t>>> jump_updates;
  auto drop_fresh = [&](bool keep_blocks) {
    forget(chain.entry_jump, fresh);
    forget(chain.head_jump, fresh);
    for (auto& h : chain.hooks) forget(h.link, fresh);
    if (keep_blocks)
      fresh.blocks.clear();
    else
      fresh.free_all();
  };
  auto fail_with = [&](Error e) -> Status {
    // After a failed rollback some jump may lead into the new relays: never free them.
    drop_fresh(e.code == ErrorCode::kInconsistent);
    return tl::unexpected<Error>(std::move(e));
  };
  // Retargets a jump point when its bytes differ from what `to` needs.
  auto retarget = [&](JumpPoint& point, std::uintptr_t to, std::optional<disasm::FunctionExtent> extent) -> Status {
    auto bytes = route(point, to, fresh);
    if (!bytes) return tl::unexpected<Error>(std::move(bytes).error());
    if (*bytes == point.bytes) return {};
    PUNCH_TRY(tx.add(Site{point.address, point.bytes, *bytes, extent}));
    jump_updates.emplace_back(&point, std::move(*bytes));
    return {};
  };

  // The entry: outermost enabled detour, or the original bytes.
  std::optional<std::uintptr_t> outer;
  for (auto it = chain.hooks.rbegin(); it != chain.hooks.rend() && !outer; ++it)
    if (it->enabled) outer = it->detour;
  const EntryPlan& plan = chain.plan;
  disasm::FunctionExtent entry_extent = plan.extent;
  entry_extent.end = std::max(entry_extent.end, plan.resume());

  std::vector<std::uint8_t> entry = plan.original;
  bool entry_is_jump_only = false;  // Only the 5-byte jump changes (single-instruction site).
  if (outer && plan.kind == HookEntryKind::kStolenAbsolute) {
    if (auto s = retarget(chain.head_jump, *outer, block_extent(*chain.head)); !s) return fail_with(s.error());
    entry = encode_absolute_entry(chain.head->address);
  } else if (outer) {
    auto bytes = route(chain.entry_jump, *outer, fresh);
    if (!bytes) return fail_with(bytes.error());
    entry = *bytes;
    entry_is_jump_only = chain.entry_bytes != plan.original;
  }
  entry.resize(plan.size(), kInt3);  // Stolen bytes after the jump are never executed.
  if (entry != chain.entry_bytes) {
    const std::size_t n = entry_is_jump_only ? kRel32JumpSize : entry.size();
    Site site{plan.entry,
              {chain.entry_bytes.begin(), chain.entry_bytes.begin() + static_cast<std::ptrdiff_t>(n)},
              {entry.begin(), entry.begin() + static_cast<std::ptrdiff_t>(n)},
              entry_extent};
    if (auto s = tx.add(std::move(site)); !s) return fail_with(s.error());
  }

  // Each chained hook's stub: the next enabled detour inward, else the trampoline.
  for (std::size_t i = 0; i < chain.hooks.size(); ++i) {
    HookRecord& h = chain.hooks[i];
    if (!h.stub) continue;
    std::uintptr_t to = chain.trampoline.address;
    for (std::size_t j = i; j-- > 0;)
      if (chain.hooks[j].enabled) {
        to = chain.hooks[j].detour;
        break;
      }
    if (auto s = retarget(h.link, to, block_extent(*h.stub)); !s) return fail_with(s.error());
  }

  if (mode == Reconcile::kCheck) {
    Status checked = tx.sites().empty() ? Status{} : live::check_copies(tx.sites(), options);
    drop_fresh(false);
    return checked;
  }
  if (!tx.sites().empty())
    if (auto s = tx.commit(); !s) return fail_with(s.error());
  chain.entry_bytes = entry;
  if (plan.kind != HookEntryKind::kStolenAbsolute)
    chain.entry_jump.bytes.assign(entry.begin(), entry.begin() + kRel32JumpSize);
  for (auto& [point, bytes] : jump_updates) point->bytes = std::move(bytes);
  return {};
}

// The extent of a detour from its symbols or unwind tables; none for JIT code.
std::optional<runtime::CodeRange> detour_extent(std::uintptr_t detour) {
  auto extent = function_extent(detour);
  if (!extent) return std::nullopt;
  return runtime::CodeRange{extent->start, extent->end};
}

// The hooked chain (other than the one at `target`) whose replaced bytes meet
// [begin, end), or null. Chains without hooks are left as they were found.
const Chain* overlapping_chain(const HookRegistry& r, std::uintptr_t target, std::uintptr_t begin, std::uintptr_t end) {
  for (const auto& [t, chain] : r.chains)
    if (t != target && !chain->hooks.empty() && chain->plan.target < end && begin < chain->plan.resume())
      return chain.get();
  return nullptr;
}

// Whether [entry, resume) still holds the bytes the chain was planned from.
bool still_original(const Chain& chain) {
  auto now = runtime::safe_read_exact(chain.plan.entry, chain.plan.size());
  return now && *now == chain.plan.original && chain.entry_bytes == chain.plan.original;
}

// Whether an unused chain's entry form is the one `options` asks for.
bool same_form(const EntryPlan& plan, const HookOptions& options) {
  const bool absolute = plan.kind == HookEntryKind::kStolenAbsolute;
  const bool patchable = plan.kind == HookEntryKind::kPatchableEntry;
  return absolute == options.force_absolute_entry && (options.prefer_patchable_entry || !patchable);
}

// Plans a new chain for `target`, builds its trampoline (and head for the absolute form).
Result<std::unique_ptr<Chain>> make_chain(std::uintptr_t target, std::uintptr_t detour, const HookOptions& options) {
  // Write policy: a hook redirects code, never data (no opt-in: a "function" in data is a mistake).
  auto mapping = runtime::find_mapping(target);
  if (!mapping) return fail(ErrorCode::kNotMapped, at(target) + ": not mapped; nothing to hook");
  if (!mapping->executable)
    return fail(ErrorCode::kPolicy, at(target) + ": lies in a non-executable mapping [" + at(mapping->start) + ", " +
                                        at(mapping->end) + ") " + mapping->path + "; only code can be hooked");
  auto h = heap();
  if (!h) return tl::unexpected<Error>(std::move(h).error());
  // The dual-map writer (what `auto` picks where /proc/self/mem writes are
  // refused) writes only memory it mapped: say so before anything is written.
  if ((*h)->writer().method() == runtime::WriteMethod::kDualMap && !(*h)->owns(target))
    return fail(ErrorCode::kUnsupported, at(target) + ": the dual-map writer can write only code punch mapped, not " +
                                             (mapping->path.empty() ? std::string("this mapping") : mapping->path) +
                                             "; hooking it needs the proc-mem writer (/proc/self/mem writes) or "
                                             "PUNCH_WRITE_METHOD=mprotect where MDWE is off");
  Result<EntryPlan> plan = fail(ErrorCode::kUnprovable, "no plan");
  if (options.prefer_patchable_entry && !options.force_absolute_entry) plan = plan_patchable_entry(target);
  const StealPolicy policy{options.function, options.transaction.allow_unprovable};
  if (!plan)
    plan = plan_stolen_entry(target, options.force_absolute_entry ? kAbsoluteEntrySize : kRel32JumpSize, policy);
  if (!plan) return tl::unexpected<Error>(std::move(plan).error());

  // A rel32 entry needs the detour, or a relay to it, in reach; else fall back to the absolute form.
  if (plan->kind != HookEntryKind::kStolenAbsolute && !disasm::encode_jmp_rel32(plan->entry, detour)) {
    // A relay in reach is built when the entry is routed; make sure there is room for one.
    auto room = (*h)->reserve_room(16, 16, runtime::AddressWindow::rel32_reach(plan->entry + kRel32JumpSize));
    if (!room && plan->kind == HookEntryKind::kStolenRel32 && options.allow_absolute_entry) {
      plan = plan_stolen_entry(target, kAbsoluteEntrySize, policy);
      if (!plan)
        return fail(plan.error().code, at(target) +
                                           ": no memory within rel32 reach of the entry, and the absolute "
                                           "entry form cannot be used: " +
                                           plan.error().message);
    } else if (!room) {
      return fail(ErrorCode::kOutOfRange, at(target) + ": no memory within rel32 reach of the entry for a relay to " +
                                              at(detour) + ": " + room.error().message);
    }
  }

  auto chain = std::make_unique<Chain>();
  chain->plan = std::move(*plan);
  chain->entry_bytes = chain->plan.original;
  chain->entry_jump.address = chain->plan.entry;
  // With a shadow stack the callee's `ret` must match a real call: the stolen call stays one.
  chain->trampoline_holds_returns = chain->plan.ends_in_call && shadow_stack_enabled();
  auto trampoline = build_trampoline(chain->plan, chain->trampoline_holds_returns, **h);
  if (!trampoline) return tl::unexpected<Error>(std::move(trampoline).error());
  chain->trampoline = *trampoline;
  if (chain->plan.kind == HookEntryKind::kStolenAbsolute) {
    auto head = build_link_stub(chain->trampoline.address, **h);
    if (!head) {
      (void)(*h)->free(chain->trampoline.address);
      return tl::unexpected<Error>(std::move(head).error());
    }
    chain->head = *head;
    chain->head_jump.address = head->address + kLinkJumpOffset;
    auto now = runtime::safe_read_exact(chain->head_jump.address, kRel32JumpSize);
    if (now) chain->head_jump.bytes = *now;
  }
  return chain;
}

// Frees a chain that was never linked into memory (its install failed).
void free_unlinked_chain(Chain& chain) {
  auto h = heap();
  if (!h) return;
  (void)(*h)->free(chain.trampoline.address);
  if (chain.head) (void)(*h)->free(chain.head->address);
  for (auto* point : {&chain.entry_jump, &chain.head_jump})
    for (auto& [to, relay] : point->relays) (void)(*h)->free(relay.address);
}

// Whether enabling the newest hook of the chain would be accepted: an
// installed hook that can never be enabled is refused at install instead.
Status check_enable(Chain& chain, const TransactionOptions& options) {
  HookRecord& newest = chain.hooks.back();
  newest.enabled = true;
  Status checked = reconcile(chain, options, Reconcile::kCheck);
  newest.enabled = false;
  return checked;
}

// registry_install with the lock held.
Result<std::uint64_t> install_locked(HookRegistry& r, std::uintptr_t target, std::uintptr_t detour,
                                     const HookOptions& options, void** original,
                                     const std::optional<GeneratedDetour>& generated) {
  if (target == 0 || detour == 0) return fail(ErrorCode::kInvalidArgument, at(target) + ": null target or detour");
  if (target == detour) return fail(ErrorCode::kInvalidArgument, at(target) + ": a function cannot be its own detour");

  // A target inside another hook's replaced bytes would be overwritten by it.
  if (const Chain* other = overlapping_chain(r, target, target, target + 1))
    return fail(ErrorCode::kConflict,
                at(target) + ": inside the bytes punch replaced to hook " + at(other->plan.target));

  auto found = r.chains.find(target);
  if (found != r.chains.end() && found->second->hooks.empty() &&
      (!still_original(*found->second) || !same_form(found->second->plan, options))) {
    retire_chain(r, found);  // The entry changed since, or another form is asked for: plan afresh.
    found = r.chains.end();
  }
  const bool fresh_chain = found == r.chains.end();
  if (fresh_chain) {
    auto chain = make_chain(target, detour, options);
    if (!chain) return tl::unexpected<Error>(std::move(chain).error());
    // Nor may its replaced bytes cover another hook's (a mid hook a few bytes on).
    if (const Chain* other = overlapping_chain(r, target, target, (*chain)->plan.resume())) {
      free_unlinked_chain(**chain);
      return fail(ErrorCode::kConflict, at(target) + ": the bytes [" + at(target) + ", " + at((*chain)->plan.resume()) +
                                            ") a hook would replace hold the jump "
                                            "punch wrote to hook " +
                                            at(other->plan.target));
    }
    found = r.chains.emplace(target, std::move(*chain)).first;
  }
  Chain& chain = *found->second;

  HookRecord record;
  record.id = ++r.next_id;
  record.detour = detour;
  record.enabled = options.enabled;
  record.options = options.transaction;
  if (generated) {
    record.generated = generated->code;
    if (generated->in_flight) record.in_flight.push_back(generated->in_flight);
    record.detour_ranges.push_back({generated->code.address, generated->code.address + generated->code.size});
    record.detour_ranges.insert(record.detour_ranges.end(), generated->callees.begin(), generated->callees.end());
  } else if (auto extent = detour_extent(detour)) {
    record.detour_ranges.push_back(*extent);
  }
  if (!chain.hooks.empty()) {  // Wrap the existing hooks: our trampoline is a stub leading inward.
    auto h = heap();
    auto stub = h ? build_link_stub(chain.trampoline.address, **h) : tl::unexpected<Error>(h.error());
    if (!stub) return tl::unexpected<Error>(std::move(stub).error());
    record.stub = *stub;
    record.link.address = stub->address + kLinkJumpOffset;
    record.link.bytes = *disasm::encode_jmp_rel32(record.link.address, chain.trampoline.address);
  }
  chain.hooks.push_back(record);
  // The caller's variable holds the way to the original before any call can reach the detour.
  void* const previous = original ? __atomic_load_n(original, __ATOMIC_ACQUIRE) : nullptr;
  if (original) {
    const std::uintptr_t way_in = record.stub ? record.stub->address : chain.trampoline.address;
    __atomic_store_n(original, reinterpret_cast<void*>(way_in), __ATOMIC_RELEASE);
  }
  Status s = record.enabled ? Status{} : check_enable(chain, options.transaction);
  if (s) s = reconcile(chain, options.transaction);
  if (!s) {
    const bool inconsistent = s.error().code == ErrorCode::kInconsistent;
    // After a failed rollback the entry may still lead to the detour: it keeps finding the original.
    if (original && !inconsistent) __atomic_store_n(original, previous, __ATOMIC_RELEASE);
    chain.hooks.pop_back();
    auto h = heap();
    if (record.stub && inconsistent)
      retire(r, *record.stub, {}, true);
    else if (record.stub && h)
      (void)(*h)->free(record.stub->address);
    if (fresh_chain) {
      if (inconsistent)
        abandon_chain(r, chain);
      else
        free_unlinked_chain(chain);
      r.chains.erase(found);
    }
    return tl::unexpected<Error>(std::move(s).error());
  }
  for (const runtime::CodeRange& range : record.detour_ranges)
    if (std::find_if(chain.detour_extents.begin(), chain.detour_extents.end(),
                     [&](const runtime::CodeRange& e) { return e.begin == range.begin; }) == chain.detour_extents.end())
      chain.detour_extents.push_back(range);
  chain.in_flight.insert(chain.in_flight.end(), record.in_flight.begin(), record.in_flight.end());
  r.targets.emplace(record.id, target);
  return record.id;
}

}  // namespace

Result<std::uint64_t> registry_install(std::uintptr_t target, std::uintptr_t detour, const HookOptions& options,
                                       void** original, std::optional<GeneratedDetour> generated) {
  HookRegistry& r = hook_registry();
  std::lock_guard lock(r.mutex);
  auto id = install_locked(r, target, detour, options, original, generated);
  if (!id && generated) {
    // After a failed rollback the entry may lead to the generated detour: keep it forever.
    if (id.error().code == ErrorCode::kInconsistent) {
      retire(r, generated->code, {}, true);
    } else if (auto h = heap()) {
      (void)(*h)->free(generated->code.address);
    }
  }
  return id;
}

Status registry_set_enabled(std::uint64_t id, bool enabled) {
  HookRegistry& r = hook_registry();
  std::lock_guard lock(r.mutex);
  auto [chain, h] = lookup(r, id);
  if (!h) return not_installed(id);
  if (h->enabled == enabled) return {};
  h->enabled = enabled;
  if (auto s = reconcile(*chain, h->options); !s) {
    h->enabled = !enabled;
    return s;
  }
  return {};
}

Status registry_remove(std::uint64_t id) {
  HookRegistry& r = hook_registry();
  std::lock_guard lock(r.mutex);
  auto [found, hook] = lookup(r, id);
  if (!hook) return not_installed(id);
  Chain& chain = *found;
  const auto it = chain.hooks.begin() + (hook - chain.hooks.data());
  HookRecord removed = *it;
  const auto index = it - chain.hooks.begin();
  chain.hooks.erase(it);
  if (auto s = reconcile(chain, removed.options); !s) {
    chain.hooks.insert(chain.hooks.begin() + index, removed);
    return s;
  }
  // A detour may still hold the stub: it is freed only by release_retired_hook_code.
  const std::vector<runtime::CodeRange>& callers = removed.detour_ranges;
  if (removed.stub) retire(r, *removed.stub, callers, false, removed.in_flight);
  if (removed.generated) retire(r, *removed.generated, callers, false, removed.in_flight);
  retire_jump_point(r, removed.link, callers, removed.in_flight);
  r.targets.erase(id);
  return {};
}

bool registry_enabled(std::uint64_t id) {
  HookRegistry& r = hook_registry();
  std::lock_guard lock(r.mutex);
  const HookRecord* h = lookup(r, id).hook;
  return h && h->enabled;
}

HookInfo registry_info(std::uint64_t id) {
  HookRegistry& r = hook_registry();
  std::lock_guard lock(r.mutex);
  auto [found, hook] = lookup(r, id);
  if (!hook) return {};
  const Chain& chain = *found;
  HookInfo info;
  info.target = chain.plan.target;
  info.entry = chain.plan.entry;
  info.kind = chain.plan.kind;
  info.stolen = chain.plan.size();
  info.chain_position = static_cast<std::size_t>(hook - chain.hooks.data());
  info.trampoline = hook->stub ? hook->stub->address : chain.trampoline.address;
  return info;
}

}  // namespace punch::patcher::detail
