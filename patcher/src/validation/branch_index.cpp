// The per-object index of direct branch targets: built once per loaded
// object on first use, dropped when any object is unloaded.
#include "branch_index.hpp"

#include <link.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <punch/disasm/branch_sweep.hpp>
#include <punch/disasm/instruction.hpp>
#include <punch/runtime/fork_safe_mutex.hpp>
#include <punch/runtime/safe_read.hpp>

#include "lock_ranks.hpp"

namespace punch::patcher::detail {
namespace {

struct Segment {
  std::uintptr_t start = 0;
  std::uintptr_t end = 0;
};

// What dl_iterate_phdr says about the object holding an address.
struct LoadedObject {
  std::string path;
  std::uintptr_t load_bias = 0;
  std::vector<Segment> code;  // Executable PT_LOAD segments, ascending.
};

// The loaded object whose executable segments hold `address`, and how many
// objects were unloaded so far (dlpi_subs): the cache's generation.
struct Lookup {
  std::uintptr_t address = 0;
  std::optional<LoadedObject> object;
  unsigned long long unloads = 0;
};

int visit_object(dl_phdr_info* info, std::size_t size, void* data) {
  auto& lookup = *static_cast<Lookup*>(data);
  if (size >= offsetof(dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs) lookup.unloads = info->dlpi_subs;
  std::array<Segment, 16> code{};
  std::size_t count = 0;
  bool holds = false;
  for (ElfW(Half) i = 0; i < info->dlpi_phnum && count < code.size(); ++i) {
    const ElfW(Phdr)& p = info->dlpi_phdr[i];
    if (p.p_type != PT_LOAD || !(p.p_flags & PF_X) || p.p_memsz == 0) continue;
    const Segment s{info->dlpi_addr + p.p_vaddr, info->dlpi_addr + p.p_vaddr + p.p_memsz};
    holds = holds || (s.start <= lookup.address && lookup.address < s.end);
    code[count++] = s;
  }
  if (!holds) return 0;
  LoadedObject found{info->dlpi_name ? info->dlpi_name : "", info->dlpi_addr, {code.begin(), code.begin() + count}};
  std::sort(found.code.begin(), found.code.end(), [](Segment a, Segment b) { return a.start < b.start; });
  lookup.object = std::move(found);
  return 1;
}

Lookup find_object(std::uintptr_t address) {
  Lookup lookup;
  lookup.address = address;
  dl_iterate_phdr(visit_object, &lookup);
  return lookup;
}

// One object's direct branches that land in its own code, by target.
// Addresses are kept as 32-bit offsets from the object's first code byte:
// half the memory (libc: 66,000 branches).
struct Entry {
  std::uint32_t target = 0;
  std::uint32_t source = 0;
  bool operator<(const Entry& o) const { return target != o.target ? target < o.target : source < o.source; }
};

struct ObjectIndex {
  LoadedObject object;
  std::uintptr_t base = 0;  // object.code.front().start
  std::uintptr_t span = 0;  // From base to the end of the last code segment.
  std::vector<Entry> by_target;
  std::size_t bytes = 0;
};

Result<std::unique_ptr<ObjectIndex>> build_index(LoadedObject object) {
  auto index = std::make_unique<ObjectIndex>();
  index->base = object.code.front().start;
  index->span = object.code.back().end - index->base;
  const std::string name = object.path.empty() ? std::string("the main program") : object.path;
  if (index->span > UINT32_MAX)
    return fail(ErrorCode::kUnsupported, index->base,
                "the code of " + name + " spans more than 4 GiB; its branches cannot be indexed");
  std::vector<std::uint8_t> bytes;
  std::vector<disasm::DirectBranch> found;
  for (const Segment& s : object.code) {
    bytes.resize(s.end - s.start);
    auto n = runtime::safe_read(s.start, bytes);
    if (!n)
      return fail(std::move(n).error().with_context("cannot read the code of " + name + " to index its branches"));
    if (*n < bytes.size())
      return fail(ErrorCode::kNotMapped, s.start + *n,
                  "the code of " + name + " is not all readable; its branches cannot be indexed");
    disasm::sweep_direct_branches({s.start, bytes}, found);
    index->bytes += bytes.size();
  }
  // Only targets in the object's own code matter: the question is always
  // about a range of its code (and the sweep of data aims anywhere).
  const auto in_code = [&](std::uintptr_t a) {
    return std::any_of(object.code.begin(), object.code.end(), [&](Segment s) { return s.start <= a && a < s.end; });
  };
  index->by_target.reserve(found.size());
  for (const disasm::DirectBranch& b : found)
    if (in_code(b.target))
      index->by_target.push_back(
          {static_cast<std::uint32_t>(b.target - index->base), static_cast<std::uint32_t>(b.source - index->base)});
  std::sort(index->by_target.begin(), index->by_target.end());
  index->by_target.shrink_to_fit();
  index->object = std::move(object);
  return index;
}

bool same_object(const LoadedObject& a, const LoadedObject& b) {
  return a.load_bias == b.load_bias && a.code.front().start == b.code.front().start && a.path == b.path;
}

// Every index built since the last unload. Built while the program loads (a
// fork during the first use would leave the child's initialization guard taken).
struct Cache {
  runtime::ForkSafeMutex mutex{detail::kBranchIndexRank};
  unsigned long long unloads = 0;  // dlpi_subs when the indexes were built.
  std::vector<std::unique_ptr<ObjectIndex>> objects;
};

Cache& cache() {
  static Cache* c = new Cache;  // Never destroyed: hooks may be removed during exit.
  return *c;
}

[[maybe_unused]] const bool g_cache_built = (cache(), true);

}  // namespace

Result<std::vector<ForeignBranch>> find_branches_into(std::uintptr_t begin, std::uintptr_t end) {
  std::vector<ForeignBranch> found;
  Lookup lookup = find_object(begin);
  if (!lookup.object) return found;
  Cache& c = cache();
  std::lock_guard lock(c.mutex);
  // An unloaded object's index could describe whatever is mapped there next:
  // any unload drops them all (indexes then use only what was seen with the
  // same count of unloads, so a lookup that raced an unload cannot keep one).
  if (lookup.unloads != c.unloads) {
    c.objects.clear();
    c.unloads = lookup.unloads;
  }
  auto it = std::find_if(c.objects.begin(), c.objects.end(),
                         [&](const auto& index) { return same_object(index->object, *lookup.object); });
  if (it == c.objects.end()) {
    auto built = build_index(std::move(*lookup.object));
    if (!built) return tl::unexpected(std::move(built).error());
    c.objects.push_back(std::move(*built));
    it = std::prev(c.objects.end());
  }
  const ObjectIndex& index = **it;

  // Offsets from the object's first code byte; `begin` lies in its code.
  const std::uintptr_t lo = begin - index.base;
  const std::uintptr_t hi = std::min(end - index.base, index.span);
  auto entry = std::upper_bound(index.by_target.begin(), index.by_target.end(),
                                Entry{static_cast<std::uint32_t>(lo), UINT32_MAX});
  for (; entry != index.by_target.end() && entry->target < hi; ++entry)
    if (entry->source < lo || entry->source >= hi)
      found.push_back(
          {index.base + entry->source, index.base + entry->target, index.object.path, index.object.load_bias});
  return found;
}

std::string describe(const ForeignBranch& branch) {
  const std::string object = branch.object.empty() ? std::string("the main program") : branch.object;
  const auto where = [&](std::uintptr_t a) {
    char offset[32];
    std::snprintf(offset, sizeof offset, "+%#lx", static_cast<unsigned long>(a - branch.load_bias));
    return at(a) + " (" + object + offset + ")";
  };
  std::string text = "a branch";
  std::array<std::uint8_t, 15> bytes{};  // The longest instruction; the code may end sooner.
  if (auto n = runtime::safe_read(branch.source, bytes); n)
    text = "`" + disasm::format({branch.source, std::span(bytes).first(*n)}, branch.source) + "`";
  return text + " at " + where(branch.source) + " lands at " + where(branch.target);
}

namespace {

// A legacy prefix or REX: a branch past some of these still runs an instruction.
bool is_prefix(std::uint8_t b) {
  switch (b) {
    case 0xf0:
    case 0xf2:
    case 0xf3:
    case 0x2e:
    case 0x36:
    case 0x3e:
    case 0x26:
    case 0x64:
    case 0x65:
    case 0x66:
    case 0x67: return true;
    default: return (b & 0xf0) == 0x40;
  }
}

// The instruction of `now` that `target` lands in, not at its start and not
// only past prefixes: where no real code branches to. Null when the target
// is a place code can land (or `now` does not decode: assume it can).
std::optional<disasm::Instruction> lands_mid_instruction(disasm::CodeSpan now, std::uintptr_t target) {
  auto instructions = disasm::decode_all(now);
  if (!instructions) return std::nullopt;
  for (const disasm::Instruction& insn : *instructions) {
    if (target < insn.address || target >= insn.end()) continue;
    for (std::uintptr_t a = insn.address; a < target; ++a)
      if (!is_prefix(now.bytes[a - now.address])) return insn;
    return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace

Status check_no_branch_into(disasm::CodeSpan now, bool allow_unprovable, const std::string& subject,
                            const std::string& range) {
  auto found = find_branches_into(now.address, now.end());
  if (!found && allow_unprovable) return {};
  if (!found)
    return fail(ErrorCode::kUnprovable, subject + ": cannot prove no branch lands inside " + range + ": " +
                                            found.error().message + " (set allow_unprovable to accept)");
  std::optional<std::pair<ForeignBranch, disasm::Instruction>> data_like;
  for (const ForeignBranch& branch : *found) {
    auto inside = lands_mid_instruction(now, branch.target);
    if (!inside) return fail(ErrorCode::kBranchInto, subject + ": " + describe(branch) + ", inside " + range);
    if (!data_like) data_like.emplace(branch, *inside);
  }
  if (data_like && !allow_unprovable) {
    const auto& [branch, insn] = *data_like;
    return fail(ErrorCode::kUnprovable, subject + ": " + describe(branch) + ", inside " + range +
                                            ", in the middle of `" + disasm::format(now, insn.address) + "` at " +
                                            at(insn.address) +
                                            ": data in the code decoded as a branch? (set "
                                            "allow_unprovable to accept)");
  }
  return {};
}

BranchIndexStats branch_index_stats() {
  Cache& c = cache();
  std::lock_guard lock(c.mutex);
  BranchIndexStats stats;
  for (const auto& index : c.objects) {
    ++stats.objects;
    stats.branches += index->by_target.size();
    stats.bytes += index->bytes;
  }
  return stats;
}

void forget_branch_indexes() {
  Cache& c = cache();
  std::lock_guard lock(c.mutex);
  c.objects.clear();
}

}  // namespace punch::patcher::detail
