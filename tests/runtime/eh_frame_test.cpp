// The .eh_frame_hdr / FDE parser: finds the FDE of a pc in hand-built and
// real tables, and refuses truncated or corrupt tables cleanly (never reads
// past the bytes it is given: run it under the ASan build).
#include <gtest/gtest.h>

#include <link.h>

#include <cstring>
#include <random>
#include <vector>

#include <punch/runtime/eh_frame.hpp>
#include <punch/runtime/function_bounds.hpp>

namespace punch::runtime {
namespace {

constexpr std::uintptr_t kBase = 0x10000;
constexpr std::uintptr_t kFunction = 0x20000;
constexpr std::uint32_t kFunctionSize = 0x40;

// Little-endian bytes for hand-built tables.
struct Bytes {
  std::vector<std::uint8_t> b;
  void u8(std::uint8_t v) { b.push_back(v); }
  void u32(std::uint32_t v) {
    for (int i = 0; i < 4; ++i) b.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  void u64(std::uint64_t v) {
    for (int i = 0; i < 8; ++i) b.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  void s32(std::int64_t v) { u32(static_cast<std::uint32_t>(static_cast<std::int32_t>(v))); }
  void str(const char* s) { b.insert(b.end(), s, s + std::strlen(s) + 1); }
  void put32(std::size_t at, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) b[at + i] = static_cast<std::uint8_t>(v >> (8 * i));
  }
  std::uintptr_t here() const { return kBase + b.size(); }
};

struct TableShape {
  std::uint8_t version = 1;
  std::uint8_t table_encoding = 0x3b;  // datarel|sdata4
  std::uint32_t count = 1;
  const char* augmentation = "zR";
  bool wide_fde = false;  // A 64-bit length on the FDE.
};

// .eh_frame_hdr at kBase, then one CIE and one FDE for [kFunction, kFunction + kFunctionSize).
std::vector<std::uint8_t> build(const TableShape& shape = {}) {
  Bytes t;
  t.u8(shape.version);
  t.u8(0x1b);  // .eh_frame pointer: pcrel|sdata4
  t.u8(0x03);  // count: udata4
  t.u8(shape.table_encoding);
  const std::size_t frame_ptr_at = t.b.size();
  t.s32(0);
  t.u32(shape.count);
  const std::size_t table_at = t.b.size();
  t.s32(static_cast<std::int64_t>(kFunction - kBase));
  t.s32(0);  // FDE address, filled below.
  while (t.b.size() % 8) t.u8(0);

  const std::size_t cie = t.b.size();
  t.put32(frame_ptr_at, static_cast<std::uint32_t>(cie - frame_ptr_at));
  t.u32(0);  // length, filled below
  t.u32(0);  // CIE id
  t.u8(1);
  t.str(shape.augmentation);
  t.u8(1);     // code alignment
  t.u8(0x78);  // data alignment -8
  t.u8(16);    // return address register
  const std::string aug = shape.augmentation;
  if (!aug.empty() && aug[0] == 'z') {
    Bytes data;
    for (char c : aug.substr(1)) {
      if (c == 'P') {
        data.u8(0x9b);  // indirect|pcrel|sdata4
        data.s32(0x1234);
      } else if (c == 'L' || c == 'R') {
        data.u8(0x1b);
      }
    }
    t.u8(static_cast<std::uint8_t>(data.b.size()));
    t.b.insert(t.b.end(), data.b.begin(), data.b.end());
  }
  while ((t.b.size() - cie) % 8) t.u8(0);
  t.put32(cie, static_cast<std::uint32_t>(t.b.size() - cie - 4));

  const std::size_t fde = t.b.size();
  t.put32(table_at + 4, static_cast<std::uint32_t>(fde));  // datarel: relative to the header at kBase
  std::size_t length_at = fde;
  if (shape.wide_fde) {
    t.u32(0xffffffffu);
    length_at = t.b.size();
    t.u64(0);
  } else {
    t.u32(0);
  }
  const std::size_t id_at = t.b.size();
  t.u32(static_cast<std::uint32_t>(id_at - cie));
  t.s32(static_cast<std::int64_t>(kFunction) - static_cast<std::int64_t>(t.here()));  // pc_begin, pcrel
  t.u32(kFunctionSize);                                                               // pc_range
  t.u8(0);                                                                            // augmentation data
  while ((t.b.size() - fde) % 8) t.u8(0);
  const std::size_t body = t.b.size() - id_at;
  if (shape.wide_fde) {
    for (int i = 0; i < 8; ++i) t.b[length_at + i] = static_cast<std::uint8_t>(std::uint64_t(body) >> (8 * i));
  } else {
    t.put32(length_at, static_cast<std::uint32_t>(body));
  }
  t.u32(0);  // terminator
  return t.b;
}

Result<FdeRange> look_up(const std::vector<std::uint8_t>& bytes, std::uintptr_t pc) {
  return find_fde(UnwindTables{bytes, kBase, kBase}, pc);
}

TEST(EhFrame, FindsTheFdeOfAHandBuiltTable) {
  for (const char* augmentation : {"zR", "zPLR", ""}) {
    for (bool wide : {false, true}) {
      TableShape shape;
      shape.augmentation = augmentation;
      shape.wide_fde = wide;
      const auto bytes = build(shape);
      for (std::uintptr_t pc : {kFunction, kFunction + 1, kFunction + kFunctionSize - 1}) {
        auto fde = look_up(bytes, pc);
        if (std::string(augmentation).empty()) {
          // No 'R': the FDE's pc_begin is an absolute pointer, which these bytes do not hold.
          EXPECT_FALSE(fde);
          continue;
        }
        ASSERT_TRUE(fde) << augmentation << (wide ? " wide: " : ": ") << fde.error().describe();
        EXPECT_EQ(fde->start, kFunction);
        EXPECT_EQ(fde->end, kFunction + kFunctionSize);
      }
    }
  }
}

TEST(EhFrame, AddressesNoFdeCoversAreUnprovable) {
  const auto bytes = build();
  for (std::uintptr_t pc : {kFunction - 1, kFunction + kFunctionSize, std::uintptr_t{0}}) {
    auto fde = look_up(bytes, pc);
    ASSERT_FALSE(fde);
    EXPECT_EQ(fde.error().code, ErrorCode::kUnprovable);
    EXPECT_NE(fde.error().message.find(at(pc)), std::string::npos) << fde.error().message;
  }
}

TEST(EhFrame, RefusesUnsupportedOrCorruptHeaders) {
  auto refused = [](const std::vector<std::uint8_t>& bytes) {
    auto fde = look_up(bytes, kFunction);
    return !fde && fde.error().code == ErrorCode::kDecodeFailed;
  };
  TableShape v2;
  v2.version = 2;
  EXPECT_TRUE(refused(build(v2)));
  TableShape unsorted;
  unsorted.table_encoding = 0x1b;  // pcrel: no binary search table
  EXPECT_TRUE(refused(build(unsorted)));
  TableShape huge;
  huge.count = 0x10000000;
  EXPECT_TRUE(refused(build(huge)));
  TableShape unknown;
  unknown.augmentation = "zXR";
  EXPECT_TRUE(refused(build(unknown)));
  TableShape old_gcc;
  old_gcc.augmentation = "eh";
  EXPECT_TRUE(refused(build(old_gcc)));

  // The table's FDE pointer leads outside the bytes, or to the CIE.
  auto outside = build();
  outside[16] = 0xff, outside[17] = 0xff, outside[18] = 0xff, outside[19] = 0x7f;
  EXPECT_TRUE(refused(outside));
  auto to_cie = build();
  to_cie[16] = 24, to_cie[17] = to_cie[18] = to_cie[19] = 0;
  EXPECT_TRUE(refused(to_cie));

  // The header itself outside the bytes.
  const auto bytes = build();
  EXPECT_FALSE(find_fde(UnwindTables{bytes, kBase, kBase + bytes.size()}, kFunction));
  EXPECT_FALSE(find_fde(UnwindTables{bytes, kBase, kBase - 1}, kFunction));
  EXPECT_FALSE(find_fde(UnwindTables{{}, kBase, kBase}, kFunction));
}

TEST(EhFrame, EveryTruncationAndByteFlipOfAHandBuiltTableIsHandled) {
  const auto bytes = build({.augmentation = "zPLR"});
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    const std::vector<std::uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
    auto fde = look_up(cut, kFunction + 3);
    if (fde) {  // Only the trailing terminator may go.
      EXPECT_EQ(fde->start, kFunction) << n;
    }
  }
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      auto flipped = bytes;
      flipped[i] ^= static_cast<std::uint8_t>(1u << bit);
      auto fde = look_up(flipped, kFunction + 3);
      if (fde) {
        EXPECT_TRUE(fde->start <= kFunction + 3 && kFunction + 3 < fde->end) << i << ":" << bit;
      }
    }
  }
}

// A copy of this program's own unwind tables: the readable segment holding
// .eh_frame_hdr, from the header on (.eh_frame follows it; what comes before
// may hold ASan's poisoned globals).
struct OwnTables {
  std::vector<std::uint8_t> copy;
  std::uintptr_t address = 0;
  std::uintptr_t hdr = 0;
};

OwnTables own_tables() {
  OwnTables own;
  dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* data) {
        auto& o = *static_cast<OwnTables*>(data);
        for (int i = 0; i < info->dlpi_phnum; ++i)
          if (info->dlpi_phdr[i].p_type == PT_GNU_EH_FRAME) o.hdr = info->dlpi_addr + info->dlpi_phdr[i].p_vaddr;
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const auto& h = info->dlpi_phdr[i];
          const std::uintptr_t start = info->dlpi_addr + h.p_vaddr;
          if (h.p_type == PT_LOAD && o.hdr >= start && o.hdr < start + h.p_memsz) {
            o.address = o.hdr;
            o.copy.assign(reinterpret_cast<const std::uint8_t*>(o.hdr),
                          reinterpret_cast<const std::uint8_t*>(start) + h.p_memsz);
          }
        }
        return 1;  // The main program only.
      },
      &own);
  return own;
}

__attribute__((noinline)) int unwind_test_target(int x) { return x * 11 + 3; }

TEST(EhFrame, OwnTablesTruncatedOrCorruptedAreRefusedOrRight) {
  const OwnTables own = own_tables();
  ASSERT_FALSE(own.copy.empty());
  const auto pc = reinterpret_cast<std::uintptr_t>(&unwind_test_target) + 2;
  auto right = find_fde(UnwindTables{own.copy, own.address, own.hdr}, pc);
  ASSERT_TRUE(right) << right.error().describe();
  EXPECT_EQ(right->start, reinterpret_cast<std::uintptr_t>(&unwind_test_target));

  // Every cut is refused or still right (the FDE may lie before the cut).
  const std::size_t step = std::max<std::size_t>(1, own.copy.size() / 4000);
  for (std::size_t n = 0; n < own.copy.size(); n += step) {
    auto fde = find_fde(UnwindTables{std::span(own.copy).first(n), own.address, own.hdr}, pc);
    if (fde) {
      EXPECT_EQ(fde->start, right->start) << n;
      EXPECT_EQ(fde->end, right->end) << n;
    }
  }
  // Random corruption of the header, the table and the records: never a crash,
  // and an answer always covers the pc.
  std::mt19937 rng(13);
  const std::size_t hdr = own.hdr - own.address;
  for (int round = 0; round < 3000; ++round) {
    auto bad = own.copy;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      // Half the flips land in the first KiB of the header and table, where every lookup reads.
      const std::size_t i =
          rng() % 2 ? hdr + rng() % std::min<std::size_t>(1024, bad.size() - hdr) : rng() % bad.size();
      bad[i] = static_cast<std::uint8_t>(rng());
    }
    auto fde = find_fde(UnwindTables{bad, own.address, own.hdr}, pc);
    if (fde) {
      EXPECT_TRUE(fde->start <= pc && pc < fde->end);
    }
  }
}

}  // namespace
}  // namespace punch::runtime
