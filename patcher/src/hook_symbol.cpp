// Finding a function to hook by name in the loaded objects.
#include <dlfcn.h>

#include <punch/patcher/hook.hpp>

namespace punch::patcher {

Result<void*> resolve_symbol(const SymbolRef& symbol) {
  if (symbol.name.empty()) return fail(ErrorCode::kInvalidArgument, "resolve_symbol: empty symbol name");
  void* object = RTLD_DEFAULT;
  if (!symbol.object.empty()) {
    // RTLD_NOLOAD: only objects already loaded; the reference is dropped again below.
    object = dlopen(symbol.object.c_str(), RTLD_LAZY | RTLD_NOLOAD);
    if (object == nullptr)
      return fail(ErrorCode::kNotMapped, "resolve_symbol: object `" + symbol.object + "` is not loaded");
  }
  dlerror();
  void* address = symbol.version.empty() ? dlsym(object, symbol.name.c_str())
                                         : dlvsym(object, symbol.name.c_str(), symbol.version.c_str());
  // Copied before dlclose, which may free the text dlerror returned.
  const char* error_text = dlerror();
  const std::string why = error_text ? error_text : "";
  if (object != RTLD_DEFAULT) dlclose(object);
  const std::string where = symbol.object.empty() ? "any loaded object" : "`" + symbol.object + "`";
  const std::string what = "`" + symbol.name + (symbol.version.empty() ? "" : "@" + symbol.version) + "`";
  if (address == nullptr)
    return fail(ErrorCode::kNotMapped, "resolve_symbol: " + what + " not found in " + where +
                                           (why.empty() ? std::string() : " (" + why + ")"));
  return address;
}

}  // namespace punch::patcher
