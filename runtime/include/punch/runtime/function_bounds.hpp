// punch::runtime function_bounds — the extent of the function holding an address.
//
// Hooks and patches need a function's bounds to scan it for branches into the
// bytes they replace. Ordinary executables export no symbols and are often
// stripped, so the bounds come from the first source that knows them:
//  1. the object's dynamic symbols (.dynsym of its file, or dladdr1 with
//     RTLD_DL_SYMENT where the file cannot be used);
//  2. the ELF symbol table (.symtab) of the object's file on disk.
//     The file (found through dl_iterate_phdr; /proc/self/exe for the main
//     program) is mapped read-only once per loaded object and used only when
//     its PT_LOAD layout and build-id match the image in memory;
//  3. the unwind tables (.eh_frame through PT_GNU_EH_FRAME's search table),
//     which gcc and clang emit for every function, stripped or not.
// JIT code is in none of them: callers give its extent themselves.
// Thread-safe; usable in a fork child. Objects unloaded by dlclose leave no
// stale entry (the cache is dropped when the loader reports an unload).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <punch/result.hpp>

namespace punch::runtime {

//! [start, end) of one function and where the bounds came from.
struct FunctionBounds {
  std::uintptr_t start = 0;
  std::uintptr_t end = 0;
  enum class Source {
    kDynamicSymbol,  //!< The object's .dynsym (its file's, or through dladdr1).
    kSymbolTable,    //!< .symtab of the object's file.
    kUnwindTable,    //!< An FDE of .eh_frame.
  } source = Source::kDynamicSymbol;
  std::string name;  //!< The symbol's name; empty for an FDE.
};

//! "dynamic symbol", "symbol table" or "unwind table".
const char* to_string(FunctionBounds::Source source) noexcept;

//! The function holding `address`. kUnprovable naming the address, the object
//! and what each source said when none knows it (or that no loaded object
//! holds the address: JIT code, the stack).
Result<FunctionBounds> function_containing(std::uintptr_t address);

//! Whether a function known to any source starts exactly at `address`.
bool function_starts_at(std::uintptr_t address);

//! The address of the function `name` in the .symtab of a loaded object's
//! file (see ElfSymbolTable::named), for names no dynamic symbol table holds
//! (a program linked without -rdynamic). Searches the object loaded at
//! `bias` when given, else every object in load order (the main program
//! first). kNotMapped saying where it looked when no file has the name.
Result<std::uintptr_t> function_named(std::string_view name, std::optional<std::uintptr_t> bias = std::nullopt);

//! Unmaps every cached object file; the next lookup reads them again (for
//! benchmarks of a cold lookup; lookups never need it).
void drop_function_bounds_cache();

}  // namespace punch::runtime
