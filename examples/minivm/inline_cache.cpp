// Inline-cache misses: the generic property access, then one more way of the
// cache filled by patching its two immediates (slot offset first, so a
// thread that sees the new shape id also finds the right offset).
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
    if (cache.shape[i] == shape) return;  // Another thread filled it meanwhile.
  const std::int32_t offset = slot_offset_from_tagged(slot);
  if (!patch::set_imm32(cache.offset_site[way], static_cast<std::uint32_t>(cache.offset[way]),
                        static_cast<std::uint32_t>(offset)))
    return;  // Nothing changed: the site stays a miss.
  cache.offset[way] = offset;
  if (!patch::set_imm32(cache.shape_site[way], cache.shape[way], shape)) return;  // Shape 0 never matches.
  cache.shape[way] = shape;
  cache.used.store(way + 1);
  counters.ic_patches.fetch_add(2, std::memory_order_relaxed);
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
