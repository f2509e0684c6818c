#include "code_names.hpp"

#include <cstdio>

#include <punch/runtime/code_registry.hpp>
#include <punch/runtime/function_bounds.hpp>

namespace punch::patcher::detail {
namespace {

std::string hex(std::uintptr_t value) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%lx", static_cast<unsigned long>(value));
  return buf;
}

std::string plus_offset(std::string_view name, std::uintptr_t start, std::uintptr_t target) {
  std::string out(name);
  if (target != start) out += "+" + hex(target - start);
  return out;
}

}  // namespace

std::string punch_code_name(std::string_view role, std::uintptr_t target) {
  const std::string prefix = "punch:" + std::string(role) + ":";
  if (runtime::CodeInfo code; runtime::find_code(target, code))
    return prefix + plus_offset(code.name, code.start, target);
  if (auto f = runtime::function_containing(target); f && !f->name.empty())
    return prefix + plus_offset(f->name, f->start, target);
  return prefix + hex(target);
}

void register_punch_code(std::uintptr_t address, std::size_t size, std::string_view role, std::uintptr_t target,
                         runtime::CodeKind kind) {
  runtime::register_code(address, size, punch_code_name(role, target), kind);
}

}  // namespace punch::patcher::detail
