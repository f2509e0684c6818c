#include "gdb_elf.hpp"

#include <elf.h>

#include <cstring>
#include <string>

namespace punch::runtime::detail {
namespace {

enum Section : std::uint16_t { kNull, kText, kEhFrame, kSymtab, kStrtab, kShstrtab, kCount };

template <class T>
std::size_t append(std::vector<std::uint8_t>& out, const T& value) {
  const std::size_t at = out.size();
  out.resize(at + sizeof(T));
  std::memcpy(out.data() + at, &value, sizeof(T));
  return at;
}

std::size_t append_bytes(std::vector<std::uint8_t>& out, std::span<const std::uint8_t> bytes, std::size_t align) {
  while (out.size() % align) out.push_back(0);
  const std::size_t at = out.size();
  out.insert(out.end(), bytes.begin(), bytes.end());
  return at;
}

}  // namespace

std::vector<std::uint8_t> build_gdb_object(std::uintptr_t text_start, std::size_t text_size,
                                           std::span<const GdbSymbol> symbols, std::span<const std::uint8_t> eh_frame) {
  // String tables: the section names, then the symbol names.
  std::string shstrtab(1, '\0');
  std::uint32_t names[kCount] = {};
  const char* section_names[kCount] = {"", ".text", ".eh_frame", ".symtab", ".strtab", ".shstrtab"};
  for (int s = kText; s < kCount; ++s) {
    names[s] = static_cast<std::uint32_t>(shstrtab.size());
    shstrtab += section_names[s];
    shstrtab += '\0';
  }
  std::string strtab(1, '\0');
  std::vector<Elf64_Sym> symtab(1);  // Entry 0 is the null symbol; the rest are global functions.
  for (const GdbSymbol& s : symbols) {
    Elf64_Sym sym{};
    sym.st_name = static_cast<std::uint32_t>(strtab.size());
    sym.st_info = ELF64_ST_INFO(STB_GLOBAL, STT_FUNC);
    sym.st_shndx = kText;
    sym.st_value = s.start - text_start;  // Relocatable object: relative to .text.
    sym.st_size = s.size;
    symtab.push_back(sym);
    strtab.append(s.name);
    strtab += '\0';
  }

  std::vector<std::uint8_t> out(sizeof(Elf64_Ehdr));
  const std::size_t eh_frame_at = append_bytes(out, eh_frame, 8);
  const std::size_t symtab_at = append_bytes(
      out, std::span(reinterpret_cast<const std::uint8_t*>(symtab.data()), symtab.size() * sizeof(Elf64_Sym)), 8);
  const std::size_t strtab_at =
      append_bytes(out, std::span(reinterpret_cast<const std::uint8_t*>(strtab.data()), strtab.size()), 1);
  const std::size_t shstrtab_at =
      append_bytes(out, std::span(reinterpret_cast<const std::uint8_t*>(shstrtab.data()), shstrtab.size()), 1);
  while (out.size() % 8) out.push_back(0);

  Elf64_Shdr sections[kCount] = {};
  auto& text = sections[kText];
  text = {names[kText], SHT_NOBITS, SHF_ALLOC | SHF_EXECINSTR, text_start, sizeof(Elf64_Ehdr), text_size, 0, 0, 16, 0};
  sections[kEhFrame] = {names[kEhFrame], SHT_PROGBITS, SHF_ALLOC, 0, eh_frame_at, eh_frame.size(), 0, 0, 8, 0};
  sections[kSymtab] = {names[kSymtab],
                       SHT_SYMTAB,
                       0,
                       0,
                       symtab_at,
                       symtab.size() * sizeof(Elf64_Sym),
                       kStrtab,
                       1 /* first global */,
                       8,
                       sizeof(Elf64_Sym)};
  sections[kStrtab] = {names[kStrtab], SHT_STRTAB, 0, 0, strtab_at, strtab.size(), 0, 0, 1, 0};
  sections[kShstrtab] = {names[kShstrtab], SHT_STRTAB, 0, 0, shstrtab_at, shstrtab.size(), 0, 0, 1, 0};
  const std::size_t sections_at = out.size();
  for (const auto& s : sections) append(out, s);

  Elf64_Ehdr header{};
  std::memcpy(header.e_ident, ELFMAG, SELFMAG);
  header.e_ident[EI_CLASS] = ELFCLASS64;
  header.e_ident[EI_DATA] = ELFDATA2LSB;
  header.e_ident[EI_VERSION] = EV_CURRENT;
  header.e_ident[EI_OSABI] = ELFOSABI_SYSV;
  header.e_type = ET_REL;
  header.e_machine = EM_X86_64;
  header.e_version = EV_CURRENT;
  header.e_shoff = sections_at;
  header.e_ehsize = sizeof(Elf64_Ehdr);
  header.e_shentsize = sizeof(Elf64_Shdr);
  header.e_shnum = kCount;
  header.e_shstrndx = kShstrtab;
  std::memcpy(out.data(), &header, sizeof(header));
  return out;
}

}  // namespace punch::runtime::detail
