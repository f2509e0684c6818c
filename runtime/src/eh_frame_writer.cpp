#include "eh_frame_writer.hpp"

#include <cstring>

namespace punch::runtime::detail {
namespace {

// DW_CFA_* opcodes (DWARF 4 section 6.4.2) and the x86-64 psABI registers.
constexpr std::uint8_t kAdvanceLoc = 0x40, kOffset = 0x80, kRestore = 0xc0;
constexpr std::uint8_t kNop = 0x00, kAdvanceLoc1 = 0x02, kAdvanceLoc2 = 0x03, kAdvanceLoc4 = 0x04;
constexpr std::uint8_t kDefCfa = 0x0c, kDefCfaRegister = 0x0d, kDefCfaOffset = 0x0e;
constexpr std::uint8_t kDwarfRsp = 7, kDwarfRbp = 6, kReturnAddress = 16;
constexpr std::uint8_t kEncodingAbsptr = 0x00;

class Out {
 public:
  explicit Out(std::vector<std::uint8_t>& bytes) : bytes_(bytes) {}
  void u8(std::uint8_t v) { bytes_.push_back(v); }
  template <class T>
  void raw(T v) {
    const auto at = bytes_.size();
    bytes_.resize(at + sizeof(T));
    std::memcpy(bytes_.data() + at, &v, sizeof(T));
  }
  void uleb(std::uint64_t v) {
    do {
      std::uint8_t b = v & 0x7f;
      v >>= 7;
      u8(v ? b | 0x80 : b);
    } while (v);
  }
  void sleb(std::int64_t v) {
    for (bool more = true; more;) {
      std::uint8_t b = v & 0x7f;
      v >>= 7;
      more = !((v == 0 && !(b & 0x40)) || (v == -1 && (b & 0x40)));
      u8(more ? b | 0x80 : b);
    }
  }
  // Starts a record: a length to patch, then returns where the record's id field is.
  std::size_t begin_record() {
    record_ = bytes_.size();
    raw<std::uint32_t>(0);
    return bytes_.size();
  }
  // Pads with DW_CFA_nop to 8 bytes and patches the length.
  void end_record() {
    while ((bytes_.size() - record_) % 8) u8(kNop);
    const std::uint32_t length = static_cast<std::uint32_t>(bytes_.size() - record_ - 4);
    std::memcpy(bytes_.data() + record_, &length, 4);
  }
  std::size_t size() const { return bytes_.size(); }

 private:
  std::vector<std::uint8_t>& bytes_;
  std::size_t record_ = 0;
};

void advance(Out& out, std::uint32_t delta) {
  if (delta == 0) return;
  if (delta < 0x40) {
    out.u8(static_cast<std::uint8_t>(kAdvanceLoc | delta));
  } else if (delta <= 0xff) {
    out.u8(kAdvanceLoc1);
    out.u8(static_cast<std::uint8_t>(delta));
  } else if (delta <= 0xffff) {
    out.u8(kAdvanceLoc2);
    out.raw(static_cast<std::uint16_t>(delta));
  } else {
    out.u8(kAdvanceLoc4);
    out.raw(delta);
  }
}

// The CFA instructions that turn row `from` into row `to`.
void change(Out& out, const FrameRow& from, const FrameRow& to) {
  if (from.cfa_on_rbp != to.cfa_on_rbp && from.cfa_offset != to.cfa_offset) {
    out.u8(kDefCfa);
    out.uleb(to.cfa_on_rbp ? kDwarfRbp : kDwarfRsp);
    out.uleb(static_cast<std::uint64_t>(to.cfa_offset));
  } else if (from.cfa_on_rbp != to.cfa_on_rbp) {
    out.u8(kDefCfaRegister);
    out.uleb(to.cfa_on_rbp ? kDwarfRbp : kDwarfRsp);
  } else if (from.cfa_offset != to.cfa_offset) {
    out.u8(kDefCfaOffset);
    out.uleb(static_cast<std::uint64_t>(to.cfa_offset));
  }
  for (std::uint8_t reg = 0; reg < 16; ++reg) {
    if (from.saved[reg] == to.saved[reg]) continue;
    const std::uint8_t dwarf = dwarf_register(reg);
    if (to.saved[reg] == 0) {
      out.u8(static_cast<std::uint8_t>(kRestore | dwarf));
    } else {
      out.u8(static_cast<std::uint8_t>(kOffset | dwarf));
      out.uleb(to.saved[reg]);  // Factored by the CIE's data alignment, -8.
    }
  }
}

}  // namespace

std::uint8_t dwarf_register(std::uint8_t gp_id) noexcept {
  // asmjit: rax rcx rdx rbx rsp rbp rsi rdi; DWARF: rax rdx rcx rbx rsi rdi rbp rsp.
  static constexpr std::uint8_t kMap[8] = {0, 2, 1, 3, 7, 6, 4, 5};
  return gp_id < 8 ? kMap[gp_id] : gp_id;
}

std::vector<std::uint8_t> write_eh_frame(std::span<const FunctionFrame> functions) {
  std::vector<std::uint8_t> bytes;
  Out out(bytes);

  // CIE: code alignment 1, data alignment -8, return address in column 16;
  // at entry the CFA is rsp + 8 and the return address is at CFA - 8.
  const std::size_t cie = out.begin_record() - 4;  // The CIE record's start (its length field).
  out.raw<std::uint32_t>(0);                       // CIE id.
  out.u8(1);                                       // Version.
  for (char c : {'z', 'R', '\0'}) out.u8(static_cast<std::uint8_t>(c));
  out.uleb(1);
  out.sleb(-8);
  out.u8(kReturnAddress);
  out.uleb(1);  // Augmentation data: the FDE pointer encoding.
  out.u8(kEncodingAbsptr);
  out.u8(kDefCfa);
  out.uleb(kDwarfRsp);
  out.uleb(8);
  out.u8(kOffset | kReturnAddress);
  out.uleb(1);
  out.end_record();

  for (const FunctionFrame& fn : functions) {
    const std::size_t id_at = out.begin_record();
    out.raw(static_cast<std::uint32_t>(id_at - cie));  // CIE pointer: from this field back to the CIE.
    out.raw(static_cast<std::uint64_t>(fn.start));
    out.raw(static_cast<std::uint64_t>(fn.size));
    out.uleb(0);       // No augmentation data.
    FrameRow current;  // The CIE's initial row.
    std::uint32_t at = 0;
    for (const FrameRow& row : fn.rows) {
      if (row.offset >= fn.size && row.offset != 0) break;  // Past the code: nothing to describe.
      advance(out, row.offset - at);
      at = row.offset;
      change(out, current, row);
      current = row;
    }
    out.end_record();
  }
  out.raw<std::uint32_t>(0);  // Terminator.
  return bytes;
}

}  // namespace punch::runtime::detail
