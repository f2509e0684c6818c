// Reading an ELF file's function symbols and load layout, every offset checked.
#include <punch/runtime/elf_file.hpp>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>

#include "byte_reader.hpp"

namespace punch::runtime {
namespace {

using detail::fits;

Error malformed(const std::string& why) { return Error{ErrorCode::kDecodeFailed, "ELF file: " + why}; }

template <class T>
std::optional<T> read_at(std::span<const std::uint8_t> bytes, std::uint64_t offset) {
  if (!fits(offset, sizeof(T), bytes.size())) return std::nullopt;
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

// The file header of a 64-bit little-endian x86-64 executable or shared object.
Result<Elf64_Ehdr> read_header(std::span<const std::uint8_t> file) {
  auto ehdr = read_at<Elf64_Ehdr>(file, 0);
  if (!ehdr || std::memcmp(ehdr->e_ident, ELFMAG, SELFMAG) != 0) return tl::unexpected(malformed("no ELF header"));
  if (ehdr->e_ident[EI_CLASS] != ELFCLASS64 || ehdr->e_ident[EI_DATA] != ELFDATA2LSB || ehdr->e_machine != EM_X86_64)
    return tl::unexpected(malformed("not a 64-bit little-endian x86-64 file"));
  if (ehdr->e_type != ET_EXEC && ehdr->e_type != ET_DYN)
    return tl::unexpected(
        malformed("not an executable or shared object (e_type " + std::to_string(ehdr->e_type) + ")"));
  return *ehdr;
}

// A table of `count` entries of `T` at `offset`, each `entsize` bytes (>= sizeof(T)).
template <class T>
Result<std::vector<T>> read_table(std::span<const std::uint8_t> file, std::uint64_t offset, std::uint64_t count,
                                  std::uint64_t entsize, const char* what) {
  if (count == 0) return std::vector<T>{};
  if (entsize < sizeof(T) || count > file.size() / entsize || !fits(offset, count * entsize, file.size()))
    return tl::unexpected(malformed(std::string(what) + " table runs past the end of the file"));
  std::vector<T> table(count);
  for (std::uint64_t i = 0; i < count; ++i) std::memcpy(&table[i], file.data() + offset + i * entsize, sizeof(T));
  return table;
}

Result<std::vector<Elf64_Phdr>> program_headers(std::span<const std::uint8_t> file, const Elf64_Ehdr& ehdr) {
  return read_table<Elf64_Phdr>(file, ehdr.e_phoff, ehdr.e_phnum, ehdr.e_phentsize, "program header");
}

Result<std::vector<Elf64_Shdr>> section_headers(std::span<const std::uint8_t> file, const Elf64_Ehdr& ehdr) {
  if (ehdr.e_shoff == 0) return std::vector<Elf64_Shdr>{};
  std::uint64_t count = ehdr.e_shnum;
  if (count == 0) {  // Extended numbering: the count is in section 0's sh_size.
    auto first = read_at<Elf64_Shdr>(file, ehdr.e_shoff);
    if (!first) return tl::unexpected(malformed("section header table runs past the end of the file"));
    count = first->sh_size;
  }
  return read_table<Elf64_Shdr>(file, ehdr.e_shoff, count, ehdr.e_shentsize, "section header");
}

// The bytes of a section that occupies file space, checked.
std::optional<std::span<const std::uint8_t>> section_bytes(std::span<const std::uint8_t> file, const Elf64_Shdr& s) {
  if (s.sh_type == SHT_NOBITS || !fits(s.sh_offset, s.sh_size, file.size())) return std::nullopt;
  return file.subspan(s.sh_offset, s.sh_size);
}

}  // namespace

Result<ElfSymbolTable> ElfSymbolTable::parse(std::span<const std::uint8_t> file, std::uint32_t table_type) {
  auto ehdr = read_header(file);
  if (!ehdr) return tl::unexpected(std::move(ehdr).error());
  auto sections = section_headers(file, *ehdr);
  if (!sections) return tl::unexpected(std::move(sections).error());
  const char* name_of_table = table_type == SHT_DYNSYM ? ".dynsym" : ".symtab";
  auto symtab =
      std::find_if(sections->begin(), sections->end(), [&](const auto& s) { return s.sh_type == table_type; });
  if (symtab == sections->end())
    return fail(ErrorCode::kUnprovable,
                std::string("ELF file: no ") + name_of_table + (table_type == SHT_SYMTAB ? " (stripped)" : ""));
  auto symbols = section_bytes(file, *symtab);
  if (!symbols || symtab->sh_entsize != sizeof(Elf64_Sym) || symtab->sh_link >= sections->size())
    return tl::unexpected(malformed(std::string(name_of_table) + " section header is malformed"));
  const Elf64_Shdr& strtab_header = (*sections)[symtab->sh_link];
  auto strings = section_bytes(file, strtab_header);
  if (!strings || strtab_header.sh_type != SHT_STRTAB)
    return tl::unexpected(malformed(std::string(name_of_table) + "'s string table is malformed"));

  ElfSymbolTable table;
  for (std::size_t i = 0; i + sizeof(Elf64_Sym) <= symbols->size(); i += sizeof(Elf64_Sym)) {
    Elf64_Sym sym;
    std::memcpy(&sym, symbols->data() + i, sizeof sym);
    const unsigned type = ELF64_ST_TYPE(sym.st_info);
    if ((type != STT_FUNC && type != STT_GNU_IFUNC) || sym.st_size == 0 || sym.st_value + sym.st_size < sym.st_value)
      continue;
    // Defined in a real section that holds code (not undefined, absolute or common).
    if (sym.st_shndx == SHN_UNDEF || sym.st_shndx >= SHN_LORESERVE || sym.st_shndx >= sections->size() ||
        !((*sections)[sym.st_shndx].sh_flags & SHF_EXECINSTR))
      continue;
    std::string_view name;
    if (sym.st_name < strings->size()) {
      const char* begin = reinterpret_cast<const char*>(strings->data()) + sym.st_name;
      const void* nul = std::memchr(begin, 0, strings->size() - sym.st_name);
      if (nul != nullptr)
        name = std::string_view(begin, static_cast<std::size_t>(static_cast<const char*>(nul) - begin));
    }
    const unsigned binding = ELF64_ST_BIND(sym.st_info);
    table.functions_.push_back({sym.st_value, sym.st_size, name, binding == STB_GLOBAL || binding == STB_WEAK});
  }
  std::sort(table.functions_.begin(), table.functions_.end(),
            [](const ElfFunction& a, const ElfFunction& b) { return a.value < b.value; });
  return table;
}

const ElfFunction* ElfSymbolTable::containing(std::uint64_t address) const noexcept {
  auto it = std::upper_bound(functions_.begin(), functions_.end(), address,
                             [](std::uint64_t a, const ElfFunction& f) { return a < f.value; });
  // Aliases share a start; a few back is enough for the odd symbol nested in another.
  for (int steps = 0; it != functions_.begin() && steps < 16; ++steps) {
    --it;
    if (address - it->value < it->size) return &*it;
  }
  return nullptr;
}

bool ElfSymbolTable::starts_at(std::uint64_t address) const noexcept {
  return std::binary_search(functions_.begin(), functions_.end(), ElfFunction{address, 0, {}},
                            [](const ElfFunction& a, const ElfFunction& b) { return a.value < b.value; });
}

const ElfFunction* ElfSymbolTable::named(std::string_view name) const noexcept {
  const ElfFunction* local = nullptr;
  bool ambiguous = false;
  for (const auto& f : functions_) {
    if (f.name != name) continue;
    if (f.global) return &f;
    // Aliases (one function, two names) are no ambiguity.
    if (local != nullptr && local->value != f.value) ambiguous = true;
    local = &f;
  }
  return ambiguous ? nullptr : local;
}

bool ElfLayout::operator==(const ElfLayout& other) const {
  auto same = [](const Elf64_Phdr& a, const Elf64_Phdr& b) {
    return a.p_type == b.p_type && a.p_flags == b.p_flags && a.p_offset == b.p_offset && a.p_vaddr == b.p_vaddr &&
           a.p_filesz == b.p_filesz && a.p_memsz == b.p_memsz;
  };
  return build_id == other.build_id &&
         std::equal(loads.begin(), loads.end(), other.loads.begin(), other.loads.end(), same);
}

std::vector<std::uint8_t> find_build_id(std::span<const std::uint8_t> notes, std::size_t align) {
  auto round = [align](std::uint64_t n) { return (n + align - 1) / align * align; };
  for (std::uint64_t offset = 0; fits(offset, sizeof(Elf64_Nhdr), notes.size());) {
    auto note = read_at<Elf64_Nhdr>(notes, offset);
    const std::uint64_t name_at = offset + sizeof(Elf64_Nhdr);
    const std::uint64_t name_size = round(note->n_namesz), desc_size = round(note->n_descsz);
    if (!fits(name_at, name_size, notes.size()) || !fits(name_at + name_size, desc_size, notes.size())) break;
    if (note->n_type == NT_GNU_BUILD_ID && note->n_namesz == 4 && std::memcmp(notes.data() + name_at, "GNU", 4) == 0) {
      const auto* desc = notes.data() + name_at + name_size;
      return {desc, desc + note->n_descsz};
    }
    offset = name_at + name_size + desc_size;
  }
  return {};
}

Result<ElfLayout> file_layout(std::span<const std::uint8_t> file) {
  auto ehdr = read_header(file);
  if (!ehdr) return tl::unexpected(std::move(ehdr).error());
  auto headers = program_headers(file, *ehdr);
  if (!headers) return tl::unexpected(std::move(headers).error());
  ElfLayout layout;
  for (const auto& h : *headers) {
    if (h.p_type == PT_LOAD) layout.loads.push_back(h);
    if (h.p_type == PT_NOTE && layout.build_id.empty() && fits(h.p_offset, h.p_filesz, file.size()))
      layout.build_id = find_build_id(file.subspan(h.p_offset, h.p_filesz), h.p_align == 8 ? 8 : 4);
  }
  return layout;
}

ElfLayout image_layout(std::span<const Elf64_Phdr> headers, std::uintptr_t bias) {
  auto mapped = [&](const Elf64_Phdr& note) {
    return std::any_of(headers.begin(), headers.end(), [&](const Elf64_Phdr& load) {
      return load.p_type == PT_LOAD && (load.p_flags & PF_R) && note.p_vaddr >= load.p_vaddr &&
             fits(note.p_vaddr - load.p_vaddr, note.p_memsz, load.p_memsz);
    });
  };
  ElfLayout layout;
  for (const auto& h : headers) {
    if (h.p_type == PT_LOAD) layout.loads.push_back(h);
    if (h.p_type == PT_NOTE && layout.build_id.empty() && mapped(h)) {
      const auto* notes = reinterpret_cast<const std::uint8_t*>(bias + h.p_vaddr);
      layout.build_id = find_build_id({notes, h.p_memsz}, h.p_align == 8 ? 8 : 4);
    }
  }
  return layout;
}

}  // namespace punch::runtime
