// Finding a function to hook by name in the loaded objects.
#include <dlfcn.h>
#include <link.h>

#include <optional>
#include <string>
#include <vector>

#include <punch/disasm/instruction.hpp>
#include <punch/patcher/hook.hpp>
#include <punch/runtime/function_bounds.hpp>
#include <punch/runtime/safe_read.hpp>

namespace punch::patcher {
namespace {

// dlsym or dlvsym in `object`.
void* look_up(void* object, const SymbolRef& symbol) {
  return symbol.version.empty() ? dlsym(object, symbol.name.c_str())
                                : dlvsym(object, symbol.name.c_str(), symbol.version.c_str());
}

// Whether `address` holds a PLT stub: `[endbr64] [bnd] jmp [rip+slot]`. A
// program that takes a library function's address in non-PIC code makes such
// a stub the function's canonical address, and dlsym returns it.
bool is_plt_stub(void* address) {
  const auto a = reinterpret_cast<std::uintptr_t>(address);
  auto bytes = runtime::safe_read_exact(a, 16);
  if (!bytes) return false;
  const disasm::CodeSpan stub{a, *bytes};
  auto insn = disasm::decode(stub, a);
  if (insn && insn->is_endbr64) insn = disasm::decode(stub, insn->end());
  return insn && insn->flow == disasm::Flow::kIndirectJump && insn->has_memory_target;
}

// The definition of `symbol` in a loaded object other than the one holding
// `stub`, in load order (the order of the global lookup); nullptr if none.
void* definition_behind(void* stub, const SymbolRef& symbol) {
  struct Objects {
    std::uintptr_t stub;
    std::vector<std::string> names;
  } objects{reinterpret_cast<std::uintptr_t>(stub), {}};
  dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* data) {
        auto& o = *static_cast<Objects*>(data);
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const auto& h = info->dlpi_phdr[i];
          if (h.p_type == PT_LOAD && o.stub - (info->dlpi_addr + h.p_vaddr) < h.p_memsz) return 0;  // The stub's.
        }
        if (info->dlpi_name != nullptr && info->dlpi_name[0] != '\0') o.names.emplace_back(info->dlpi_name);
        return 0;
      },
      &objects);
  for (const auto& name : objects.names) {
    void* object = dlopen(name.c_str(), RTLD_LAZY | RTLD_NOLOAD);
    if (object == nullptr) continue;
    void* address = look_up(object, symbol);
    dlclose(object);
    if (address != nullptr && address != stub && !is_plt_stub(address)) return address;
  }
  return nullptr;
}

}  // namespace

Result<void*> resolve_symbol(const SymbolRef& symbol) {
  if (symbol.name.empty()) return fail(ErrorCode::kInvalidArgument, "resolve_symbol: empty symbol name");
  void* object = RTLD_DEFAULT;
  std::optional<std::uintptr_t> bias;  // The named object's load bias.
  if (!symbol.object.empty()) {
    // RTLD_NOLOAD: only objects already loaded; the reference is dropped again below.
    object = dlopen(symbol.object.c_str(), RTLD_LAZY | RTLD_NOLOAD);
    if (object == nullptr)
      return fail(ErrorCode::kNotMapped, "resolve_symbol: object `" + symbol.object + "` is not loaded");
    link_map* map = nullptr;
    if (dlinfo(object, RTLD_DI_LINKMAP, &map) == 0 && map != nullptr) bias = map->l_addr;
  }
  dlerror();
  void* address = look_up(object, symbol);
  // Copied before dlclose, which may free the text dlerror returned.
  const char* error_text = dlerror();
  const std::string why = error_text ? error_text : "";
  if (object != RTLD_DEFAULT) dlclose(object);
  const std::string where = symbol.object.empty() ? "any loaded object" : "`" + symbol.object + "`";
  const std::string what = "`" + symbol.name + (symbol.version.empty() ? "" : "@" + symbol.version) + "`";
  if (address == nullptr && symbol.version.empty() && (symbol.object.empty() || bias)) {
    // Not exported (a program linked without -rdynamic): the files' .symtab may still name it.
    auto in_symtab = runtime::function_named(symbol.name, bias);
    if (in_symtab) return reinterpret_cast<void*>(*in_symtab);
  }
  if (address == nullptr)
    return fail(ErrorCode::kNotMapped, "resolve_symbol: " + what + " not found in " + where +
                                           (why.empty() ? std::string() : " (" + why + ")") +
                                           (symbol.version.empty() ? " nor in the .symtab of its files" : ""));
  // A PLT stub only forwards: hook the function it leads to, which every
  // caller reaches. (A function that is itself one `jmp [rip+x]`, defined
  // nowhere else, stays what it is.)
  if (is_plt_stub(address))
    if (void* definition = definition_behind(address, symbol)) return definition;
  return address;
}

}  // namespace punch::patcher
