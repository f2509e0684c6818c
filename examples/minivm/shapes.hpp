// minivm objects and their shapes (hidden classes).
//
// A shape is the ordered list of an object's property names; the i-th name
// lives in slot i. Shapes form a tree: adding a property moves an object to
// the child shape for that name (a transition), created once and shared by
// every object that adds the same names in the same order. Shapes are never
// freed, so their ids stay meaningful in JIT code (id 0 is no shape: an empty
// inline-cache entry compares against it and never matches).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "value.hpp"

namespace minivm {

constexpr int kMaxSlots = 8;  // Properties per object.

struct Shape {
  std::uint32_t id = 0;
  const Shape* parent = nullptr;
  std::vector<int> names;  // Property name ids, by slot.

  //! The slot of `name`, or -1.
  int slot_of(int name) const {
    for (std::size_t i = 0; i < names.size(); ++i)
      if (names[i] == name) return static_cast<int>(i);
    return -1;
  }
};

// JIT code reads these offsets: keep the layout plain.
struct Object {
  std::uint32_t shape_id;
  std::uint32_t padding;
  Value slots[kMaxSlots];
};
constexpr std::int32_t kShapeIdOffset = 0;
//! Byte offset of slot `i` from a tagged object pointer (address | 1).
constexpr std::int32_t slot_offset_from_tagged(int i) { return 8 + 8 * i - 1; }

//! Every shape of one VM, shared by all its threads.
class ShapeTable {
 public:
  ShapeTable();
  const Shape& empty() const { return *shapes_[1]; }
  //! The shape with `id` (one that an object holds): lock-free, for every property access.
  const Shape& get(std::uint32_t id) const { return *by_id_[id].load(std::memory_order_acquire); }
  //! The shape after adding `name` to `from`, created on first use. Null when
  //! the object is full or the table is.
  const Shape* transition(const Shape& from, int name);
  std::size_t size() const;

 private:
  static constexpr std::size_t kMaxShapes = 1 << 16;
  mutable std::mutex mutex_;
  std::deque<std::unique_ptr<Shape>> shapes_;  // Owners, by id.
  std::unique_ptr<std::atomic<const Shape*>[]> by_id_;
  std::map<std::pair<std::uint32_t, int>, const Shape*> transitions_;
};

//! Objects of one program run; freed together when the run ends.
class ObjectArena {
 public:
  Object* allocate(std::uint32_t empty_shape_id);
  void clear() {
    blocks_.clear();
    used_ = kBlockObjects;
  }

 private:
  static constexpr std::size_t kBlockObjects = 1024;
  std::vector<std::unique_ptr<Object[]>> blocks_;
  std::size_t used_ = kBlockObjects;
};

}  // namespace minivm
