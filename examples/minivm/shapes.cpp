#include "shapes.hpp"

namespace minivm {

ShapeTable::ShapeTable() : by_id_(std::make_unique<std::atomic<const Shape*>[]>(kMaxShapes)) {
  for (std::uint32_t id = 0; id < 2; ++id) {  // Id 0: no shape; id 1: the empty shape.
    shapes_.push_back(std::make_unique<Shape>());
    shapes_.back()->id = id;
    by_id_[id].store(shapes_.back().get());
  }
}

const Shape* ShapeTable::transition(const Shape& from, int name) {
  if (from.names.size() >= kMaxSlots) return nullptr;
  std::lock_guard lock(mutex_);
  auto [it, added] = transitions_.try_emplace({from.id, name}, nullptr);
  if (added) {
    if (shapes_.size() == kMaxShapes) {
      transitions_.erase(it);
      return nullptr;
    }
    auto shape = std::make_unique<Shape>();
    shape->id = static_cast<std::uint32_t>(shapes_.size());
    shape->parent = &from;
    shape->names = from.names;
    shape->names.push_back(name);
    it->second = shape.get();
    by_id_[shape->id].store(shape.get(), std::memory_order_release);
    shapes_.push_back(std::move(shape));
  }
  return it->second;
}

std::size_t ShapeTable::size() const {
  std::lock_guard lock(mutex_);
  return shapes_.size();
}

Object* ObjectArena::allocate(std::uint32_t empty_shape_id) {
  if (used_ == kBlockObjects) {
    blocks_.push_back(std::make_unique<Object[]>(kBlockObjects));
    used_ = 0;
  }
  Object* o = &blocks_.back()[used_++];
  o->shape_id = empty_shape_id;
  o->padding = 0;
  for (Value& slot : o->slots) slot = from_int(0);
  return o;
}

}  // namespace minivm
