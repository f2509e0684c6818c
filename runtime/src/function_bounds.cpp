// The extent of the function holding an address: dynamic symbols, then the
// file's .symtab, then the unwind tables.
#include <punch/runtime/function_bounds.hpp>

#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include <punch/runtime/eh_frame.hpp>
#include <punch/runtime/elf_file.hpp>
#include <punch/runtime/fork_safe_mutex.hpp>

namespace punch::runtime {
namespace {

using Source = FunctionBounds::Source;

// One loaded object, as dl_iterate_phdr describes it.
struct LoadedObject {
  std::uintptr_t bias = 0;  // Load address minus link-time address.
  std::span<const ElfW(Phdr)> headers;
  std::string path;                // The file it was loaded from; /proc/self/exe for the main program.
  unsigned long long unloads = 0;  // dlpi_subs: how many objects were ever unloaded.
};

bool segment_holds(const ElfW(Phdr) & h, std::uintptr_t bias, std::uintptr_t address) {
  return h.p_type == PT_LOAD && address >= bias + h.p_vaddr && address - (bias + h.p_vaddr) < h.p_memsz;
}

LoadedObject loaded_object(const dl_phdr_info& info) {
  const bool main_program = info.dlpi_name == nullptr || info.dlpi_name[0] == '\0';
  return LoadedObject{info.dlpi_addr,
                      {info.dlpi_phdr, info.dlpi_phnum},
                      main_program ? "/proc/self/exe" : info.dlpi_name,
                      info.dlpi_subs};
}

std::optional<LoadedObject> object_containing(std::uintptr_t address) {
  struct Search {
    std::uintptr_t address;
    std::optional<LoadedObject> found;
  } search{address, std::nullopt};
  dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* data) {
        auto& s = *static_cast<Search*>(data);
        for (const auto& h : std::span<const ElfW(Phdr)>(info->dlpi_phdr, info->dlpi_phnum)) {
          if (!segment_holds(h, info->dlpi_addr, s.address)) continue;
          s.found = loaded_object(*info);
          return 1;
        }
        return 0;
      },
      &search);
  return search.found;
}

// Every loaded object in load order (the main program first), or the one at `bias`.
std::vector<LoadedObject> loaded_objects(std::optional<std::uintptr_t> bias) {
  struct Search {
    std::optional<std::uintptr_t> bias;
    std::vector<LoadedObject> found;
  } search{bias, {}};
  dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* data) {
        auto& s = *static_cast<Search*>(data);
        if (!s.bias || *s.bias == info->dlpi_addr) s.found.push_back(loaded_object(*info));
        return 0;
      },
      &search);
  return search.found;
}

// An object's file mapped read-only, with its function symbols.
struct ObjectFile {
  std::uintptr_t bias = 0;
  const ElfW(Phdr) * headers = nullptr;
  void* data = MAP_FAILED;
  std::size_t size = 0;
  std::optional<ElfSymbolTable> symbols;          // .symtab
  std::optional<ElfSymbolTable> dynamic_symbols;  // .dynsym: what dladdr1 would search, sorted.
  std::string unavailable;                        // Why `symbols` is empty.

  ObjectFile() = default;
  ObjectFile(const ObjectFile&) = delete;
  ObjectFile& operator=(const ObjectFile&) = delete;
  ~ObjectFile() {
    if (data != MAP_FAILED) ::munmap(data, size);
  }
};

// Maps `object`'s file and reads its .symtab and .dynsym, if the file is the
// one the loader mapped; keeps the mapping only while a table is usable.
void load_symbols(ObjectFile& file, const LoadedObject& object) {
  auto give_up = [&](std::string why) {
    file.unavailable = std::move(why);
    if (file.data != MAP_FAILED) ::munmap(file.data, file.size);
    file.data = MAP_FAILED;
  };
  const int fd = ::open(object.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return give_up(std::string("cannot open it: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
    ::close(fd);
    return give_up("not a regular, non-empty file");
  }
  file.size = static_cast<std::size_t>(st.st_size);
  file.data = ::mmap(nullptr, file.size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int mmap_errno = errno;
  ::close(fd);
  if (file.data == MAP_FAILED) return give_up(std::string("cannot map it: ") + std::strerror(mmap_errno));
  const std::span<const std::uint8_t> bytes(static_cast<const std::uint8_t*>(file.data), file.size);
  auto on_disk = file_layout(bytes);
  if (!on_disk) return give_up(on_disk.error().message);
  if (!(*on_disk == image_layout(object.headers, object.bias)))
    return give_up("the file is not the one loaded (its PT_LOAD layout or build-id differs)");
  if (auto dynamic = ElfSymbolTable::parse(bytes, SHT_DYNSYM)) file.dynamic_symbols = std::move(*dynamic);
  auto symbols = ElfSymbolTable::parse(bytes);
  if (symbols) {
    file.symbols = std::move(*symbols);
  } else if (file.dynamic_symbols) {
    file.unavailable = symbols.error().message;  // The mapping stays for .dynsym.
  } else {
    give_up(symbols.error().message);
  }
}

// Object files read so far, one per loaded object, dropped whenever the loader
// reports an unload (an address range may then belong to another object).
class FileCache {
 public:
  //! Runs `use(const ObjectFile&)` under the cache lock, mapping the file on first use.
  template <class Use>
  auto with_file(const LoadedObject& object, Use use) {
    std::lock_guard lock(mutex_);
    if (object.unloads != unloads_) {
      files_.clear();
      unloads_ = object.unloads;
    }
    for (const auto& f : files_)
      if (f->bias == object.bias && f->headers == object.headers.data()) return use(*f);
    auto file = std::make_unique<ObjectFile>();
    file->bias = object.bias;
    file->headers = object.headers.data();
    load_symbols(*file, object);
    files_.push_back(std::move(file));
    return use(*files_.back());
  }

  void clear() {
    std::lock_guard lock(mutex_);
    files_.clear();
  }

 private:
  ForkSafeMutex mutex_{LockRank::kSymbols};  // A fork child can look functions up too.
  unsigned long long unloads_ = 0;
  std::vector<std::unique_ptr<ObjectFile>> files_;
};

FileCache& file_cache() {
  static auto* cache = new FileCache;  // Never destroyed: lookups may run during static destruction.
  return *cache;
}
// Built while the program loads: a fork during the first call would leave the
// child's copy of the static's initialization guard taken.
[[maybe_unused]] const bool g_file_cache_built = (static_cast<void>(file_cache()), true);

// 1. The dynamic symbol covering `address`; the reason otherwise. From the
// file's .dynsym, sorted once; through dladdr1 (a scan of the whole table)
// where the file cannot be used (the vDSO, a file replaced on disk).
Result<FunctionBounds> from_dynamic_symbols(const LoadedObject& object, std::uintptr_t address) {
  auto cached = file_cache().with_file(object, [&](const ObjectFile& file) -> std::optional<Result<FunctionBounds>> {
    if (!file.dynamic_symbols) return std::nullopt;
    const ElfFunction* f = file.dynamic_symbols->containing(address - object.bias);
    if (f == nullptr) return fail(ErrorCode::kUnprovable, "none covers it");
    return FunctionBounds{object.bias + f->value, object.bias + f->value + f->size, Source::kDynamicSymbol,
                          std::string(f->name)};
  });
  if (cached) return std::move(*cached);
  Dl_info info{};
  void* extra = nullptr;  // dladdr1 stores a `const ElfW(Sym)*` here.
  if (dladdr1(reinterpret_cast<void*>(address), &info, &extra, RTLD_DL_SYMENT) == 0 || info.dli_fbase == nullptr)
    return fail(ErrorCode::kUnprovable, "in no loaded object");
  const auto* symbol = static_cast<const ElfW(Sym)*>(extra);
  if (symbol == nullptr || info.dli_saddr == nullptr) return fail(ErrorCode::kUnprovable, "none precedes it");
  const auto start = reinterpret_cast<std::uintptr_t>(info.dli_saddr);
  const std::string name = info.dli_sname ? info.dli_sname : "?";
  if (symbol->st_size == 0 || address - start >= symbol->st_size)
    return fail(ErrorCode::kUnprovable, "the nearest, `" + name + "` at " + at(start) + " (size " +
                                            std::to_string(symbol->st_size) + "), does not cover it");
  return FunctionBounds{start, start + symbol->st_size, Source::kDynamicSymbol, name};
}

// 2. The .symtab symbol covering `address`; the reason otherwise.
Result<FunctionBounds> from_symbol_table(const LoadedObject& object, std::uintptr_t address) {
  return file_cache().with_file(object, [&](const ObjectFile& file) -> Result<FunctionBounds> {
    if (!file.symbols) return fail(ErrorCode::kUnprovable, file.unavailable);
    const ElfFunction* f = file.symbols->containing(address - object.bias);
    if (f == nullptr)
      return fail(ErrorCode::kUnprovable,
                  "none of its " + std::to_string(file.symbols->size()) + " function symbols covers it");
    return FunctionBounds{object.bias + f->value, object.bias + f->value + f->size, Source::kSymbolTable,
                          std::string(f->name)};
  });
}

// 3. The FDE covering `address`, through PT_GNU_EH_FRAME; the reason otherwise.
Result<FunctionBounds> from_unwind_tables(const LoadedObject& object, std::uintptr_t address) {
  const ElfW(Phdr)* hdr = nullptr;
  for (const auto& h : object.headers)
    if (h.p_type == PT_GNU_EH_FRAME) hdr = &h;
  if (hdr == nullptr) return fail(ErrorCode::kUnprovable, "no PT_GNU_EH_FRAME");
  const std::uintptr_t hdr_address = object.bias + hdr->p_vaddr;
  // .eh_frame_hdr and .eh_frame lie in one readable PT_LOAD, which the loader mapped.
  for (const auto& load : object.headers) {
    if (!segment_holds(load, object.bias, hdr_address) || !(load.p_flags & PF_R)) continue;
    const std::uintptr_t start = object.bias + load.p_vaddr;
    const UnwindTables tables{{reinterpret_cast<const std::uint8_t*>(start), load.p_memsz}, start, hdr_address};
    auto fde = find_fde(tables, address);
    if (!fde) return tl::unexpected(std::move(fde).error());
    return FunctionBounds{fde->start, fde->end, Source::kUnwindTable, {}};
  }
  return fail(ErrorCode::kUnprovable, "PT_GNU_EH_FRAME outside every readable PT_LOAD");
}

}  // namespace

const char* to_string(FunctionBounds::Source source) noexcept {
  switch (source) {
    case Source::kDynamicSymbol: return "dynamic symbol";
    case Source::kSymbolTable: return "symbol table";
    case Source::kUnwindTable: return "unwind table";
  }
  return "?";
}

Result<FunctionBounds> function_containing(std::uintptr_t address) {
  const auto object = object_containing(address);
  if (!object) return fail(ErrorCode::kUnprovable, address, "not inside any loaded object, function extent unknown");
  auto dynamic = from_dynamic_symbols(*object, address);
  if (dynamic) return dynamic;
  auto symbol = from_symbol_table(*object, address);
  if (symbol) return symbol;
  auto unwind = from_unwind_tables(*object, address);
  if (unwind) return unwind;
  return fail(ErrorCode::kUnprovable, address,
              "no function extent in " + object->path + ": dynamic symbols: " + dynamic.error().message +
                  "; .symtab: " + symbol.error().message + "; unwind tables: " + unwind.error().message);
}

bool function_starts_at(std::uintptr_t address) {
  auto bounds = function_containing(address);
  return bounds && bounds->start == address;
}

Result<std::uintptr_t> function_named(std::string_view name, std::optional<std::uintptr_t> bias) {
  std::string searched;
  for (const auto& object : loaded_objects(bias)) {
    auto address = file_cache().with_file(object, [&](const ObjectFile& file) -> std::optional<std::uintptr_t> {
      if (!file.symbols) return std::nullopt;
      const ElfFunction* f = file.symbols->named(name);
      if (f == nullptr) return std::nullopt;
      return object.bias + f->value;
    });
    if (address) return *address;
    searched += (searched.empty() ? "" : ", ") + object.path;
  }
  return fail(ErrorCode::kNotMapped, "no function `" + std::string(name) + "` in the .symtab of " +
                                         (searched.empty() ? std::string("any loaded object") : searched));
}

void drop_function_bounds_cache() { file_cache().clear(); }

}  // namespace punch::runtime
