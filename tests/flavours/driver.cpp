// Hooks the static functions of targets.c in a program built one way (see
// flavours.cmake): every case must hook, run its detour, give the original
// results through the trampoline, and leave the bytes as they were once
// removed. Hooking libc's `labs` by name must hook libc's function even where
// the program's own PLT stub is its canonical address. Exit status 0 = all good.
#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include <punch/patcher/hook.hpp>
#include <punch/runtime/function_bounds.hpp>

#include "targets.h"

namespace {

using punch::patcher::Hook;
using punch::patcher::HookOptions;

int failures = 0;

void check(bool ok, const char* name, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "FAIL %s: %s\n", name, what);
  ++failures;
}

std::vector<unsigned char> bytes_at(flavour_fn f) {
  const auto* p = reinterpret_cast<const unsigned char*>(f);
  return {p, p + 32};
}

void hook_case(const flavour_case& c) {
  const long before = c.target(c.arg);
  const auto original_bytes = bytes_at(c.target);
  const auto address = reinterpret_cast<std::uintptr_t>(c.target);
  auto bounds = punch::runtime::function_containing(address);
  if (!bounds) {
    std::fprintf(stderr, "FAIL %s: %s\n", c.name, bounds.error().describe().c_str());
    ++failures;
    return;
  }
  std::printf("%-10s %s [%#lx, %#lx) %s\n", c.name, punch::runtime::to_string(bounds->source),
              static_cast<unsigned long>(bounds->start), static_cast<unsigned long>(bounds->end), bounds->name.c_str());
  check(bounds->start == address, c.name, "the extent starts at the function");

  // Install disabled, publish the original, then redirect: no call reaches a detour without it.
  HookOptions options;
  options.enabled = false;
  auto hook = Hook::install(reinterpret_cast<void*>(c.target), reinterpret_cast<void*>(c.detour), options);
  if (!hook) {
    std::fprintf(stderr, "FAIL %s: install: %s\n", c.name, hook.error().describe().c_str());
    ++failures;
    return;
  }
  *c.original = hook->original<flavour_fn>();
  auto enabled = hook->enable();
  check(enabled.has_value(), c.name, "enable");
  check(c.target(c.arg) == before + 1000000, c.name, "the detour ran and the original gave its result");
  auto removed = hook->remove();
  check(removed.has_value(), c.name, "remove");
  check(c.target(c.arg) == before, c.name, "the original result after removal");
  check(bytes_at(c.target) == original_bytes, c.name, "the original bytes after removal");
}

flavour_fn labs_original;
long labs_detour(long x) { return labs_original(x) + 1000000; }

// dlsym("labs") may give this program's PLT stub (its canonical address when
// it is not PIE); hooking by name must hook libc's labs itself.
void hook_labs_by_name() {
  auto resolved = punch::patcher::resolve_symbol({"labs", "", ""});
  if (!resolved) {
    std::fprintf(stderr, "FAIL labs: %s\n", resolved.error().describe().c_str());
    ++failures;
    return;
  }
  Dl_info in_program{}, in_resolved{};
  dladdr(reinterpret_cast<void*>(&flavour_init), &in_program);
  dladdr(*resolved, &in_resolved);
  std::printf("labs       resolved to %p in %s (program's pointer %p)\n", *resolved,
              in_resolved.dli_fname ? in_resolved.dli_fname : "?", reinterpret_cast<void*>(flavour_labs()));
  check(in_resolved.dli_fbase != in_program.dli_fbase, "labs", "resolved outside the program (not its PLT stub)");

  HookOptions options;
  options.enabled = false;
  auto hook = Hook::install(punch::patcher::SymbolRef{"labs", "", ""}, reinterpret_cast<void*>(&labs_detour), options);
  if (!hook) {
    std::fprintf(stderr, "FAIL labs: install: %s\n", hook.error().describe().c_str());
    ++failures;
    return;
  }
  labs_original = hook->original<flavour_fn>();
  check(hook->enable().has_value(), "labs", "enable");
  check(flavour_labs()(-5) == 1000005, "labs", "a call through the program's pointer reaches the detour");
  check(hook->remove().has_value(), "labs", "remove");
  check(flavour_labs()(-5) == 5, "labs", "the original result after removal");
}

// A function the program defines, by name: found in .dynsym (-rdynamic) or
// .symtab; only a stripped program without -rdynamic has no name for it.
void hook_global_by_name(bool named) {
  const long before = flavour_global(4);
  HookOptions options;
  options.enabled = false;
  auto hook = Hook::install(punch::patcher::SymbolRef{"flavour_global", "", ""},
                            reinterpret_cast<void*>(flavour_global_detour_address), options);
  if (!named) {
    check(!hook && hook.error().code == punch::ErrorCode::kNotMapped, "flavour_global",
          "a stripped program without -rdynamic has no name to hook by");
    if (!hook) std::printf("global     by name: %s\n", hook.error().describe().c_str());
    return;
  }
  if (!hook) {
    std::fprintf(stderr, "FAIL flavour_global: install: %s\n", hook.error().describe().c_str());
    ++failures;
    return;
  }
  std::printf("global     by name at %p\n", reinterpret_cast<void*>(hook->info().target));
  check(hook->info().target == reinterpret_cast<std::uintptr_t>(&flavour_global), "flavour_global",
        "the name resolves to the function");
  *flavour_global_original_slot = hook->original<flavour_fn>();
  check(hook->enable().has_value(), "flavour_global", "enable");
  check(flavour_global(4) == before + 1000000, "flavour_global", "the detour ran");
  check(hook->remove().has_value(), "flavour_global", "remove");
  check(flavour_global(4) == before, "flavour_global", "the original result after removal");
}

}  // namespace

// argv: "rdynamic" or "private", then "symbols" or "stripped" (how the program was linked).
int main(int argc, char** argv) {
  const bool exported = argc > 1 && std::strcmp(argv[1], "rdynamic") == 0;
  const bool stripped = argc > 2 && std::strcmp(argv[2], "stripped") == 0;
  flavour_init();
  for (int i = 0; i < flavour_case_count; ++i) hook_case(flavour_cases[i]);
  hook_labs_by_name();
  hook_global_by_name(exported || !stripped);
  std::printf("%s\n", failures == 0 ? "all hooked" : "FAILED");
  return failures == 0 ? 0 : 1;
}
