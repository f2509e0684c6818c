// punch::patcher::Transaction — sites, validation, commit and revert.
//
// Every commit and revert in the process runs under one lock, and validates
// again under it right before step 1: a site whose bytes changed since the
// caller looked is refused, never applied over.
#include <punch/patcher/transaction.hpp>

#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include <punch/runtime/fork_safe_mutex.hpp>

#include "container_memo.hpp"
#include "flight_table.hpp"
#include "live_protocol.hpp"
#include "lock_ranks.hpp"
#include "copy_reclamation.hpp"
#include "out_of_line.hpp"
#include "site_decodes.hpp"
#include "site_messages.hpp"
#include "site_validation.hpp"

namespace punch::patcher {
namespace {

// Fork-safe: a child forked while another thread commits gets it unlocked
// (the atfork handler takes it before fork, so the state it guards is whole).
runtime::ForkSafeMutex& live_mutex() {
  // Never destroyed: commits may run during static destruction.
  static auto* m = new runtime::ForkSafeMutex(detail::kTransactionsRank);
  return *m;
}
// Built while the program loads: a fork during the first live_mutex() call
// would leave the child's copy of the static's initialization guard taken.
[[maybe_unused]] const bool g_live_mutex_built = (static_cast<void>(live_mutex()), true);

// PUNCH_TRAP, when set, must name a trap: a typo must not silently give
// int3 to someone patching under a debugger that owns SIGTRAP.
Status check_trap_environment() {
  const char* env = std::getenv("PUNCH_TRAP");
  if (!env) return {};
  auto parsed = parse_trap_instruction(env);
  if (!parsed) return fail(std::move(parsed).error().with_context("PUNCH_TRAP"));
  return {};
}

}  // namespace

Result<TrapInstruction> parse_trap_instruction(std::string_view name) {
  if (name == "int3") return TrapInstruction::kInt3;
  if (name == "hlt") return TrapInstruction::kHlt;
  return fail(ErrorCode::kInvalidArgument, "trap instruction `" + std::string(name) + "`: expected int3 or hlt");
}

TrapInstruction default_trap_instruction() {
  const char* env = std::getenv("PUNCH_TRAP");
  if (!env) return TrapInstruction::kInt3;
  auto parsed = parse_trap_instruction(env);
  return parsed ? *parsed : TrapInstruction::kInt3;
}

LiveStats live_stats() { return live::g_counters.snapshot(); }

Result<std::size_t> reclaim_retired_copies(std::chrono::milliseconds timeout) {
  std::lock_guard guard(live_mutex());
  return live::reclaim_generations(timeout);
}

struct Transaction::State {
  TransactionOptions options;
  std::vector<Site> sites;
  // While sites come in address order (a batch's usual order), `sites` is
  // sorted and add() compares a site with the last one only. From the first
  // that does not, by_address (site start -> index) finds its neighbours in O(log n).
  bool in_order = true;
  std::map<std::uintptr_t, std::size_t> by_address;
  bool committed = false;
  mutable bool validated = false;            // A later mismatch is then a conflict, not a stale request.
  mutable live::SiteDecodes decodes;         // The sites' bytes decoded once, for every validation.
  mutable std::vector<std::uint32_t> order;  // The sites' indexes by address (validation need not sort).

  // Validates the sites for `direction` (see live::check_sites), with what the
  // transaction knows of them, and `memo` when under the live lock.
  Result<live::CheckedBatch> check(live::Direction direction, ErrorCode mismatch, live::CopyRoom room,
                                   live::ContainerMemo* memo = nullptr) const {
    decodes.cover(sites);
    if (order.size() != sites.size()) {  // add() only appends: a size that differs means sites were added.
      order.clear();
      order.reserve(sites.size());
      if (in_order)
        for (std::uint32_t i = 0; i < sites.size(); ++i) order.push_back(i);
      else
        for (const auto& entry : by_address) order.push_back(static_cast<std::uint32_t>(entry.second));
    }
    return live::check_sites(sites, options, direction, mismatch, room, live::SiteFacts{&decodes, order, memo});
  }

  // The index of a site already added that overlaps [address, end), if any.
  // Sites added so far are disjoint: only the neighbours by address can.
  std::optional<std::size_t> overlapping(std::uintptr_t address, std::uintptr_t end) {
    const auto overlaps = [&](std::size_t i) {
      return address < sites[i].address + sites[i].expected.size() && sites[i].address < end;
    };
    if (in_order && (sites.empty() || address >= sites.back().address)) {
      if (!sites.empty() && overlaps(sites.size() - 1)) return sites.size() - 1;
      return std::nullopt;
    }
    if (in_order) {  // The first out of order: index them all.
      for (std::size_t i = 0; i < sites.size(); ++i) by_address.emplace(sites[i].address, i);
      in_order = false;
    }
    auto next = by_address.lower_bound(address);
    if (next != by_address.end() && overlaps(next->second)) return next->second;
    if (next != by_address.begin() && overlaps(std::prev(next)->second)) return std::prev(next)->second;
    return std::nullopt;
  }
};

Transaction::Transaction(TransactionOptions options) : state_(std::make_unique<State>()) { state_->options = options; }
Transaction::~Transaction() = default;
Transaction::Transaction(Transaction&&) noexcept = default;
Transaction& Transaction::operator=(Transaction&&) noexcept = default;

Status Transaction::add(Site site) {
  if (state_->committed)
    return fail(ErrorCode::kInvalidArgument, site.address, "the transaction is committed; revert it first");
  PUNCH_TRY(live::check_site_shape(site));
  if (auto other = state_->overlapping(site.address, site.address + site.expected.size()))
    return fail(ErrorCode::kOverlap, at(site.address) + " (" + std::to_string(site.expected.size()) +
                                         " bytes) overlaps " + live::site_name(*other, state_->sites[*other].address));
  if (!state_->in_order) state_->by_address.emplace(site.address, state_->sites.size());
  state_->sites.push_back(std::move(site));
  return {};
}

Status Transaction::validate() const {
  // Only looks for room for copies: validation leaves the process as it was.
  auto checked = state_->check(state_->committed ? live::Direction::kRevert : live::Direction::kApply,
                               ErrorCode::kBytesMismatch, live::CopyRoom::kLook);
  if (!checked) return tl::unexpected(std::move(checked).error());
  state_->validated = true;
  return {};
}

Status Transaction::commit() {
  if (state_->committed) return fail(ErrorCode::kInvalidArgument, "commit: the transaction is already committed");
  PUNCH_TRY(check_trap_environment());
  std::lock_guard guard(live_mutex());
  PUNCH_TRY_ASSIGN(
      live::CheckedBatch checked,
      state_->check(live::Direction::kApply, state_->validated ? ErrorCode::kConflict : ErrorCode::kBytesMismatch,
                    live::CopyRoom::kReserve, &live::container_memo()));
  PUNCH_TRY(live::run_protocol(checked, state_->options, "commit"));
  live::container_memo().keep(std::move(checked.after));
  state_->committed = true;
  live::g_counters.commits.fetch_add(1, std::memory_order_relaxed);
  return {};
}

Status Transaction::revert() {
  if (!state_->committed) return fail(ErrorCode::kInvalidArgument, "revert: the transaction is not committed");
  PUNCH_TRY(check_trap_environment());
  std::lock_guard guard(live_mutex());
  // The new bytes must still be there: someone else changing them since is a conflict.
  PUNCH_TRY_ASSIGN(live::CheckedBatch checked, state_->check(live::Direction::kRevert, ErrorCode::kConflict,
                                                             live::CopyRoom::kReserve, &live::container_memo()));
  PUNCH_TRY(live::run_protocol(checked, state_->options, "revert"));
  live::container_memo().keep(std::move(checked.after));
  state_->committed = false;
  state_->validated = false;
  live::g_counters.reverts.fetch_add(1, std::memory_order_relaxed);
  return {};
}

bool Transaction::committed() const noexcept { return state_->committed; }
std::span<const Site> Transaction::sites() const noexcept { return state_->sites; }

}  // namespace punch::patcher
