// Finding a function's bounds in .eh_frame through .eh_frame_hdr's search table.
#include <punch/runtime/eh_frame.hpp>

#include <string>

#include "byte_reader.hpp"

namespace punch::runtime {
namespace {

using detail::ByteReader;

// DWARF pointer encodings (DW_EH_PE_*): the low nibble is the format, the high one how it applies.
constexpr std::uint8_t kAbsptr = 0x00, kUleb128 = 0x01, kUdata2 = 0x02, kUdata4 = 0x03, kUdata8 = 0x04, kSleb128 = 0x09,
                       kSdata2 = 0x0a, kSdata4 = 0x0b, kSdata8 = 0x0c;
constexpr std::uint8_t kPcrel = 0x10, kDatarel = 0x30, kIndirect = 0x80, kOmit = 0xff;
constexpr std::uint8_t kSearchTableEncoding = kDatarel | kSdata4;

Error malformed(std::size_t offset, const std::string& why) {
  return Error{ErrorCode::kDecodeFailed, "unwind tables: " + why + " at offset " + std::to_string(offset)};
}

// Reads a pointer in `encoding` at the cursor. `field` is the run-time
// address of the cursor (for pcrel), `data` the base of datarel. Indirect
// pointers are read but not followed (the caller only skips them).
std::optional<std::uint64_t> read_pointer(ByteReader& r, std::uint8_t encoding, std::uint64_t field,
                                          std::uint64_t data) {
  std::optional<std::uint64_t> value;
  switch (encoding & 0x0f) {
    case kAbsptr:
    case kUdata8:
    case kSdata8: value = r.read<std::uint64_t>(); break;
    case kUleb128: value = r.uleb128(); break;
    case kUdata2: value = r.read<std::uint16_t>(); break;
    case kUdata4: value = r.read<std::uint32_t>(); break;
    case kSleb128:
      if (auto v = r.sleb128()) value = static_cast<std::uint64_t>(*v);
      break;
    case kSdata2:
      if (auto v = r.read<std::int16_t>()) value = static_cast<std::uint64_t>(std::int64_t{*v});
      break;
    case kSdata4:
      if (auto v = r.read<std::int32_t>()) value = static_cast<std::uint64_t>(std::int64_t{*v});
      break;
    default: return std::nullopt;
  }
  if (!value) return std::nullopt;
  switch (encoding & 0x70) {
    case 0: return value;
    case kPcrel: return *value + field;
    case kDatarel: return *value + data;
    default: return std::nullopt;  // textrel, funcrel, aligned: not used on x86-64 Linux.
  }
}

// One CFI record (CIE or FDE): its CIE id / CIE pointer field (4 bytes in
// .eh_frame even after a 64-bit length), where the rest begins, where it ends.
struct Record {
  std::size_t id_at = 0;
  std::uint32_t id = 0;
  std::size_t body = 0;
  std::size_t end = 0;
};

Result<Record> read_record(std::span<const std::uint8_t> bytes, std::size_t offset) {
  ByteReader r(bytes, offset);
  auto length = r.read<std::uint32_t>();
  if (!length) return tl::unexpected(malformed(offset, "record length past the end"));
  if (*length == 0) return tl::unexpected(malformed(offset, "terminator where a record was expected"));
  std::uint64_t size = *length;
  const bool wide = *length == 0xffffffffu;
  if (wide) {
    auto length64 = r.read<std::uint64_t>();
    if (!length64) return tl::unexpected(malformed(offset, "64-bit record length past the end"));
    size = *length64;
  }
  Record rec;
  rec.id_at = r.offset();
  if (!detail::fits(rec.id_at, size, bytes.size()) || size < 4)
    return tl::unexpected(malformed(offset, "record of " + std::to_string(size) + " bytes runs past the end"));
  rec.end = rec.id_at + static_cast<std::size_t>(size);
  rec.id = *r.read<std::uint32_t>();
  rec.body = r.offset();
  return rec;
}

// The FDE pointer encoding from a CIE's augmentation ('R'); absptr without one.
Result<std::uint8_t> fde_encoding(std::span<const std::uint8_t> bytes, std::uintptr_t address, std::size_t cie) {
  auto rec = read_record(bytes, cie);
  if (!rec) return tl::unexpected(std::move(rec).error());
  if (rec->id != 0) return tl::unexpected(malformed(cie, "FDE's CIE pointer leads to a record that is no CIE"));
  ByteReader r(bytes.first(rec->end), rec->body);
  auto version = r.read<std::uint8_t>();
  auto augmentation = r.c_string();
  if (!version || !augmentation) return tl::unexpected(malformed(cie, "truncated CIE header"));
  if (*version != 1 && *version != 3 && *version != 4)
    return tl::unexpected(malformed(cie, "CIE version " + std::to_string(*version) + " is unknown"));
  if (augmentation->empty()) return kAbsptr;
  if ((*augmentation)[0] != 'z')
    return tl::unexpected(malformed(cie, "CIE augmentation \"" + std::string(*augmentation) + "\" is unsupported"));
  if (*version == 4 && (!r.read<std::uint8_t>() || !r.read<std::uint8_t>()))  // address and segment sizes
    return tl::unexpected(malformed(cie, "truncated CIE header"));
  const bool fields = r.uleb128() && r.sleb128() && (*version == 1 ? bool(r.read<std::uint8_t>()) : bool(r.uleb128()));
  auto data_size = r.uleb128();
  if (!fields || !data_size || !detail::fits(r.offset(), *data_size, rec->end))
    return tl::unexpected(malformed(cie, "truncated CIE fields"));
  ByteReader data(bytes.first(r.offset() + static_cast<std::size_t>(*data_size)), r.offset());
  for (char c : augmentation->substr(1)) {
    std::optional<std::uint8_t> encoding;
    switch (c) {
      case 'R':
        encoding = data.read<std::uint8_t>();
        if (!encoding) return tl::unexpected(malformed(cie, "truncated 'R' augmentation"));
        return *encoding;
      case 'P':  // Personality routine: its encoding, then a pointer to skip.
        encoding = data.read<std::uint8_t>();
        if (!encoding || !read_pointer(data, *encoding & ~kIndirect, address + data.offset(), 0))
          return tl::unexpected(malformed(cie, "malformed 'P' augmentation"));
        break;
      case 'L':
        if (!data.read<std::uint8_t>()) return tl::unexpected(malformed(cie, "truncated 'L' augmentation"));
        break;
      case 'S':
      case 'B':
      case 'G': break;
      default: return tl::unexpected(malformed(cie, std::string("unknown CIE augmentation '") + c + "' before 'R'"));
    }
  }
  return kAbsptr;
}

}  // namespace

Result<FdeRange> find_fde(const UnwindTables& tables, std::uintptr_t pc) {
  const auto bytes = tables.bytes;
  const std::uintptr_t base = tables.address;
  if (tables.eh_frame_hdr < base || tables.eh_frame_hdr - base >= bytes.size())
    return tl::unexpected(malformed(0, ".eh_frame_hdr outside the given bytes"));
  const std::size_t hdr = tables.eh_frame_hdr - base;

  // .eh_frame_hdr: version, three encodings, the .eh_frame pointer, the count, the table.
  ByteReader r(bytes, hdr);
  auto version = r.read<std::uint8_t>();
  auto frame_encoding = r.read<std::uint8_t>();
  auto count_encoding = r.read<std::uint8_t>();
  auto table_encoding = r.read<std::uint8_t>();
  if (!table_encoding) return tl::unexpected(malformed(hdr, "truncated .eh_frame_hdr"));
  if (*version != 1)
    return tl::unexpected(malformed(hdr, ".eh_frame_hdr version " + std::to_string(*version) + " is unknown"));
  if (*frame_encoding == kOmit || *count_encoding == kOmit || *table_encoding != kSearchTableEncoding)
    return tl::unexpected(malformed(hdr, ".eh_frame_hdr has no binary search table (datarel|sdata4)"));
  if (!read_pointer(r, *frame_encoding, base + r.offset(), tables.eh_frame_hdr))
    return tl::unexpected(malformed(hdr, "malformed .eh_frame pointer in .eh_frame_hdr"));
  auto count = read_pointer(r, *count_encoding, base + r.offset(), tables.eh_frame_hdr);
  const std::size_t table = r.offset();
  if (!count || *count > (bytes.size() - table) / 8)
    return tl::unexpected(malformed(hdr, "search table count runs past the end"));

  // Entries are (function start, FDE address) relative to the header; the last start <= pc.
  auto entry = [&](std::size_t i, int field) {
    ByteReader e(bytes, table + i * 8 + static_cast<std::size_t>(field) * 4);
    return tables.eh_frame_hdr + static_cast<std::uint64_t>(std::int64_t{*e.read<std::int32_t>()});
  };
  std::size_t lo = 0, hi = static_cast<std::size_t>(*count);  // First entry whose start is > pc.
  while (lo < hi) {
    const std::size_t mid = lo + (hi - lo) / 2;
    if (entry(mid, 0) <= pc)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo == 0) return fail(ErrorCode::kUnprovable, pc, "before the first function of the unwind tables");
  const std::uint64_t start = entry(lo - 1, 0);
  const std::uint64_t fde_address = entry(lo - 1, 1);
  if (fde_address < base || fde_address - base >= bytes.size())
    return tl::unexpected(malformed(table + (lo - 1) * 8, "search table entry points outside the tables"));
  const std::size_t fde = static_cast<std::size_t>(fde_address - base);

  // The FDE: its CIE pointer (relative to the field), pc_begin and pc_range in the CIE's encoding.
  auto rec = read_record(bytes, fde);
  if (!rec) return tl::unexpected(std::move(rec).error());
  if (rec->id == 0 || rec->id > rec->id_at) return tl::unexpected(malformed(fde, "search table entry leads to no FDE"));
  auto encoding = fde_encoding(bytes, base, rec->id_at - static_cast<std::size_t>(rec->id));
  if (!encoding) return tl::unexpected(std::move(encoding).error());
  if (*encoding & kIndirect) return tl::unexpected(malformed(fde, "indirect FDE pointer encoding"));
  ByteReader f(bytes.first(rec->end), rec->body);
  auto pc_begin = read_pointer(f, *encoding, base + f.offset(), tables.eh_frame_hdr);
  auto pc_range = read_pointer(f, *encoding & 0x0f, 0, 0);
  if (!pc_begin || !pc_range) return tl::unexpected(malformed(fde, "truncated or unsupported FDE pc range"));
  if (*pc_begin != start)
    return tl::unexpected(malformed(fde, "FDE starts at " + at(*pc_begin) + ", the search table says " + at(start)));
  if (*pc_range == 0 || *pc_begin + *pc_range < *pc_begin || pc >= *pc_begin + *pc_range)
    return fail(ErrorCode::kUnprovable, pc,
                "past the end of the nearest FDE [" + at(*pc_begin) + ", " + at(*pc_begin + *pc_range) + ")");
  return FdeRange{static_cast<std::uintptr_t>(*pc_begin), static_cast<std::uintptr_t>(*pc_begin + *pc_range)};
}

}  // namespace punch::runtime
