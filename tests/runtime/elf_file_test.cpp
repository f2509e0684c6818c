// The ELF file reader: finds function symbols in a real file, and refuses
// truncated or corrupt files cleanly (never reads past the bytes it is given:
// run it under the ASan build).
#include <gtest/gtest.h>

#include <elf.h>

#include <cstring>
#include <fstream>
#include <random>
#include <vector>

#include <punch/runtime/elf_file.hpp>

namespace punch::runtime {
namespace {

__attribute__((noinline, used)) int elf_test_static_function(int x) { return x * 5 - 1; }

std::vector<std::uint8_t> read_file(const char* path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(in.tellg()));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  return bytes;
}

Elf64_Ehdr header_of(const std::vector<std::uint8_t>& file) {
  Elf64_Ehdr h;
  std::memcpy(&h, file.data(), sizeof h);
  return h;
}

TEST(ElfFile, FindsThisProgramsFunctionsInItsSymbolTable) {
  const auto file = read_file("/proc/self/exe");
  ASSERT_GT(file.size(), sizeof(Elf64_Ehdr));
  auto table = ElfSymbolTable::parse(file);
  ASSERT_TRUE(table) << table.error().describe();
  EXPECT_GT(table->size(), 100u);
  const ElfFunction* f = table->named("_ZN5punch7runtime12_GLOBAL__N_124elf_test_static_functionEi");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(table->containing(f->value), f);
  EXPECT_EQ(table->containing(f->value + f->size - 1), f);
  EXPECT_TRUE(table->starts_at(f->value));
  EXPECT_FALSE(table->starts_at(f->value + 1));

  auto layout = file_layout(file);
  ASSERT_TRUE(layout) << layout.error().describe();
  EXPECT_FALSE(layout->loads.empty());
}

TEST(ElfFile, RefusesWhatIsNoElfFile) {
  const std::vector<std::uint8_t> empty, text = {'#', '!', '/', 'b', 'i', 'n'};
  for (const auto* bytes : {&empty, &text}) {
    EXPECT_EQ(ElfSymbolTable::parse(*bytes).error().code, ErrorCode::kDecodeFailed);
    EXPECT_EQ(file_layout(*bytes).error().code, ErrorCode::kDecodeFailed);
  }
  auto file = read_file("/proc/self/exe");
  file[EI_CLASS] = ELFCLASS32;
  EXPECT_EQ(ElfSymbolTable::parse(file).error().code, ErrorCode::kDecodeFailed);
}

TEST(ElfFile, CorruptHeadersAreRefused) {
  const auto good = read_file("/proc/self/exe");
  const Elf64_Ehdr h = header_of(good);
  auto with = [&](auto change) {
    auto bytes = good;
    Elf64_Ehdr e = h;
    change(e);
    std::memcpy(bytes.data(), &e, sizeof e);
    return ElfSymbolTable::parse(bytes);
  };
  EXPECT_FALSE(with([](Elf64_Ehdr& e) { e.e_shentsize = 8; }));
  EXPECT_FALSE(with([](Elf64_Ehdr& e) { e.e_shoff = ~0ull - 8; }));
  EXPECT_FALSE(with([&](Elf64_Ehdr& e) { e.e_shnum = 0xffff; }));
  EXPECT_FALSE(with([](Elf64_Ehdr& e) { e.e_type = ET_REL; }));
  // No section headers at all: no .symtab, which is no error in the file.
  auto none = with([](Elf64_Ehdr& e) { e.e_shoff = 0; });
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, ErrorCode::kUnprovable);
}

TEST(ElfFile, EveryTruncationIsRefusedOrParsed) {
  const auto good = read_file("/proc/self/exe");
  const Elf64_Ehdr h = header_of(good);
  std::vector<std::size_t> cuts = {0,
                                   1,
                                   4,
                                   16,
                                   sizeof(Elf64_Ehdr) - 1,
                                   sizeof(Elf64_Ehdr),
                                   h.e_phoff + 1,
                                   h.e_shoff,
                                   h.e_shoff + 1,
                                   good.size() - 1};
  for (std::size_t n = 0; n < good.size(); n += good.size() / 64 + 1) cuts.push_back(n);
  for (std::size_t n : cuts) {
    if (n > good.size()) continue;
    std::span<const std::uint8_t> cut(good.data(), n);
    auto table = ElfSymbolTable::parse(cut);
    if (n < good.size()) {  // The section headers come last.
      EXPECT_FALSE(table) << n;
    }
    (void)file_layout(cut);
  }
}

TEST(ElfFile, RandomCorruptionOfHeadersAndSymbolsNeverCrashes) {
  auto bytes = read_file("/proc/self/exe");
  const Elf64_Ehdr h = header_of(bytes);
  // Where the section headers, .symtab and its strings lie: corrupt those.
  std::vector<std::pair<std::size_t, std::size_t>> regions = {{0, sizeof(Elf64_Ehdr)},
                                                              {h.e_shoff, h.e_shnum * sizeof(Elf64_Shdr)},
                                                              {h.e_phoff, h.e_phnum * sizeof(Elf64_Phdr)}};
  for (int i = 0; i < h.e_shnum; ++i) {
    Elf64_Shdr s;
    std::memcpy(&s, bytes.data() + h.e_shoff + i * sizeof s, sizeof s);
    if (s.sh_type == SHT_SYMTAB || s.sh_type == SHT_STRTAB || s.sh_type == SHT_NOTE)
      regions.push_back({s.sh_offset, std::min<std::size_t>(s.sh_size, 4096)});
  }
  std::mt19937 rng(13);
  for (int round = 0; round < 150; ++round) {
    std::vector<std::pair<std::size_t, std::uint8_t>> saved;
    for (int f = 0; f < 8; ++f) {
      const auto& [start, size] = regions[rng() % regions.size()];
      const std::size_t i = start + rng() % size;
      saved.push_back({i, bytes[i]});
      bytes[i] = static_cast<std::uint8_t>(rng());
    }
    auto table = ElfSymbolTable::parse(bytes);
    if (table) {
      for (std::uint64_t a : {0x1000ull, 0x40000ull, ~0ull}) {
        const ElfFunction* f = table->containing(a);
        if (f) {
          EXPECT_LT(a - f->value, f->size);
        }
      }
    }
    (void)file_layout(bytes);
    for (auto it = saved.rbegin(); it != saved.rend(); ++it) bytes[it->first] = it->second;
  }
}

TEST(ElfFile, BuildIdNotesAreReadWithinBounds) {
  // namesz 4 "GNU", descsz 3, type NT_GNU_BUILD_ID, desc padded to 4.
  std::vector<std::uint8_t> note = {4, 0, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0, 'G', 'N', 'U', 0, 0xaa, 0xbb, 0xcc, 0};
  EXPECT_EQ(find_build_id(note, 4), (std::vector<std::uint8_t>{0xaa, 0xbb, 0xcc}));
  for (std::size_t n = 0; n < note.size() - 1; ++n)
    EXPECT_TRUE(find_build_id(std::span(note).first(n), 4).empty()) << n;
  note[4] = 0xff, note[5] = 0xff, note[6] = 0xff, note[7] = 0xff;  // descsz past the end
  EXPECT_TRUE(find_build_id(note, 4).empty());
}

}  // namespace
}  // namespace punch::runtime
