// Inline-cache misses: the generic property access, then one more way of the
// cache filled by patching its immediate (shape id and slot offset at once).
#include <mutex>

#include "patch_sites.hpp"
#include "vm.hpp"

namespace minivm {
namespace {

// Fills a free way of `cache` with (shape, slot); under the patch lock.
void fill_way(InlineCache& cache, std::uint32_t shape, int slot, Counters& counters) {
  const int way = cache.used.load();
  if (way == InlineCache::kWays || cache.owner->retired) return;
  for (int i = 0; i < way; ++i)
    if (static_cast<std::uint32_t>(cache.way[i]) == shape) return;  // Another thread filled it meanwhile.
  const std::uint64_t value = InlineCache::way_value(shape, slot_offset_from_tagged(slot));
  if (!patch::set_imm64(cache.site[way], cache.way[way], value)) return;  // Nothing changed: the site stays a miss.
  cache.way[way] = value;
  cache.used.store(way + 1);
  counters.ic_patches.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

Value Vm::get_miss(InlineCache& cache, Value object) {
  const Object* o = to_object(object);
  const Shape& shape = shapes_.get(o->shape_id);
  const int slot = shape.slot_of(cache.name);
  if (slot < 0) return from_int(0);
  const Value v = o->slots[slot];
  if (cache.used.load(std::memory_order_relaxed) < InlineCache::kWays) {
    std::lock_guard lock(patch_mutex_);
    fill_way(cache, shape.id, slot, counters_);
  }
  return v;
}

void Vm::set_miss(ThreadState& t, InlineCache& cache, Value object, Value v) {
  Object* o = to_object(object);
  const Shape& shape = shapes_.get(o->shape_id);
  const int slot = shape.slot_of(cache.name);
  if (slot < 0) return set_property(t, object, cache.name, v);  // A transition: not cached.
  o->slots[slot] = v;
  if (cache.used.load(std::memory_order_relaxed) < InlineCache::kWays) {
    std::lock_guard lock(patch_mutex_);
    fill_way(cache, shape.id, slot, counters_);
  }
}

}  // namespace minivm
