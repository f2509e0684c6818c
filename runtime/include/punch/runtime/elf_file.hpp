// punch::runtime elf_file — what an ELF file on disk says about its functions.
//
// Function symbols (.symtab, which `strip` removes and the loader never maps)
// and what ties the file to its loaded image (PT_LOAD layout, GNU build-id).
// The bytes may be anything (a truncated, replaced or hostile file): every
// offset and size is checked, and a malformed file is refused, never read past.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include <elf.h>

#include <punch/result.hpp>

namespace punch::runtime {

//! A sized function symbol; `value` is its link-time address (add the load bias).
struct ElfFunction {
  std::uint64_t value = 0;
  std::uint64_t size = 0;
  std::string_view name;  //!< A view into the file's bytes.
  bool global = false;    //!< STB_GLOBAL or STB_WEAK (else local: a static function).
};

//! The function symbols (STT_FUNC / STT_GNU_IFUNC, defined, sized, in an
//! executable section) of an ELF file's .symtab (or .dynsym), sorted by
//! address. Views into the file's bytes, which must outlive the table.
class ElfSymbolTable {
 public:
  //! kDecodeFailed naming the reason when the bytes are no well-formed 64-bit
  //! x86-64 ELF executable or shared object; kUnprovable when it has no such
  //! table. `table` is SHT_SYMTAB or SHT_DYNSYM.
  static Result<ElfSymbolTable> parse(std::span<const std::uint8_t> file, std::uint32_t table = SHT_SYMTAB);

  //! The symbol whose [value, value + size) holds `address` (link-time), or nullptr.
  const ElfFunction* containing(std::uint64_t address) const noexcept;
  //! Whether a function symbol starts at `address` (link-time).
  bool starts_at(std::uint64_t address) const noexcept;
  //! The function named `name` (a linear search): the first global one, else
  //! the local one when exactly one has the name; nullptr when none or ambiguous.
  const ElfFunction* named(std::string_view name) const noexcept;
  std::size_t size() const noexcept { return functions_.size(); }

 private:
  std::vector<ElfFunction> functions_;
};

//! What ties a file to the image the loader mapped from it.
struct ElfLayout {
  std::vector<Elf64_Phdr> loads;       //!< The PT_LOAD headers, in order.
  std::vector<std::uint8_t> build_id;  //!< NT_GNU_BUILD_ID, empty when there is none.
  bool operator==(const ElfLayout&) const;
};

//! The layout of an ELF file's bytes; kDecodeFailed when malformed.
Result<ElfLayout> file_layout(std::span<const std::uint8_t> file);

//! The layout of a loaded image from its program headers (as dl_iterate_phdr
//! gives them) and its notes, read in memory at `bias` + p_vaddr.
ElfLayout image_layout(std::span<const Elf64_Phdr> headers, std::uintptr_t bias);

//! The GNU build-id in a run of ELF notes aligned to `align` (4 or 8); empty when none.
std::vector<std::uint8_t> find_build_id(std::span<const std::uint8_t> notes, std::size_t align);

}  // namespace punch::runtime
