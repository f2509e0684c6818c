// libFuzzer: the ELF file reader and the .eh_frame_hdr/FDE parser take any
// bytes; they must refuse or answer, never read outside them.
#include <cstddef>
#include <cstdint>
#include <span>

#include <punch/runtime/eh_frame.hpp>
#include <punch/runtime/elf_file.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  if (auto table = punch::runtime::ElfSymbolTable::parse(bytes)) {
    (void)table->containing(0x1000);
    (void)table->named("main");
  }
  (void)punch::runtime::file_layout(bytes);
  (void)punch::runtime::find_build_id(bytes, 4);
  // The bytes as unwind tables at 0x10000 with the header at their start; a few pcs in and around them.
  constexpr std::uintptr_t base = 0x10000;
  for (std::uintptr_t pc : {base, base + 0x40, base + size, std::uintptr_t{0x20000}})
    (void)punch::runtime::find_fde({bytes, base, base}, pc);
  return 0;
}
