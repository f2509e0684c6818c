// The hook registry's model: per hooked target a chain of hooks around one
// trampoline, the jumps that lead through it, and the code retired from it.
// registry.cpp changes it only by whole transactions (reconcile);
// hook_retirement.cpp frees what it retired once no thread can be inside.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include <punch/patcher/transaction.hpp>
#include <punch/runtime/code_range.hpp>
#include <punch/runtime/fork_safe_mutex.hpp>

#include "hook_planner.hpp"
#include "hook_registry.hpp"
#include "hook_trampoline.hpp"
#include "lock_ranks.hpp"

namespace punch::patcher::detail {

// A jmp rel32 whose destination is retargeted; far destinations go through relays near it.
struct JumpPoint {
  std::uintptr_t address = 0;
  std::vector<std::uint8_t> bytes;             // The 5 bytes there now.
  std::map<std::uintptr_t, CodeBlock> relays;  // Destination -> relay within reach.
};

struct HookRecord {
  std::uint64_t id = 0;
  std::uintptr_t detour = 0;
  // Where a thread may be on its way into the chain's code: the detour's
  // extent (from its ELF symbol, when it has one), or a generated detour and what it calls.
  std::vector<runtime::CodeRange> detour_ranges;
  std::optional<CodeBlock> generated;  // A generated detour the registry owns (a mid hook's stub).
  std::vector<InFlight> in_flight;     // Its count of threads inside its call.
  bool enabled = true;
  TransactionOptions options;
  std::optional<CodeBlock> stub;  // Link stub (chained hooks only): what trampoline() returns.
  JumpPoint link;                 // The stub's jump.
};

struct Chain {
  EntryPlan plan;
  CodeBlock trampoline;
  bool trampoline_holds_returns = false;  // Its stolen call is a real call (shadow stack): never freed.
  std::vector<std::uint8_t> entry_bytes;  // What [entry, resume) holds now.
  JumpPoint entry_jump;                   // rel32 forms: the jump at the entry.
  std::optional<CodeBlock> head;          // Absolute form: the stub the entry jumps to.
  JumpPoint head_jump;
  std::vector<HookRecord> hooks;  // Innermost first.
  // Every detour ever hooked here: a thread inside one may be about to call
  // into the chain's code (its trampoline pointer loaded), even after removal.
  std::vector<runtime::CodeRange> detour_extents;
  std::vector<InFlight> in_flight;  // The same for generated detours: threads inside their calls.
};

struct Retired {
  CodeBlock block;
  bool keep = false;  // A return address may point into it (stolen call): never freed.
  // Detours whose threads may still enter the block: it is in use while a thread runs one.
  std::vector<runtime::CodeRange> callers;
  std::vector<InFlight> in_flight;  // In use while any of these counts threads.
};

struct HookRegistry {
  runtime::ForkSafeMutex mutex{detail::kHooksRank};         // A child after fork can hook too.
  std::map<std::uintptr_t, std::unique_ptr<Chain>> chains;  // By target.
  std::map<std::uint64_t, std::uintptr_t> targets;          // Hook id -> target.
  std::vector<Retired> retired;
  std::uint64_t next_id = 0;
};

//! The process-wide registry (built while the program loads; never destroyed:
//! hooks may outlive static destructors).
HookRegistry& hook_registry();

//! Hook `id` and its chain, both null when no such hook is installed. The
//! caller holds the registry's lock.
struct FoundHook {
  Chain* chain = nullptr;
  HookRecord* hook = nullptr;
};
FoundHook lookup(HookRegistry& r, std::uint64_t id);

//! Hands `b` to retirement: freed by registry_release_retired once no thread
//! is inside it or inside one of `callers` (or counted by `in_flight`);
//! never, when `keep` (a return address may point into it).
void retire(HookRegistry& r, const CodeBlock& b, const std::vector<runtime::CodeRange>& callers, bool keep = false,
            const std::vector<InFlight>& in_flight = {});

//! Retires a jump point's relays.
void retire_jump_point(HookRegistry& r, JumpPoint& point, const std::vector<runtime::CodeRange>& callers,
                       const std::vector<InFlight>& in_flight);

//! Retires all code of an unused chain (no hooks) and forgets it.
void retire_chain(HookRegistry& r, std::map<std::uintptr_t, std::unique_ptr<Chain>>::iterator it);

//! After a rollback that failed too, memory may lead into any of the chain's
//! code: keeps all of it forever (a leak, never a jump into freed memory).
void abandon_chain(HookRegistry& r, Chain& chain);

}  // namespace punch::patcher::detail
