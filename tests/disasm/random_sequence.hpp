// A seeded generator of random instruction sequences that exercise every
// relocation rule: RIP-relative operands (with immediates after the
// displacement, SSE), rel8/rel32 jmp/jcc, jrcxz/loop*, call-next, a final
// call, and plain position-independent instructions, with branch targets
// inside the run, at its end, and outside it. Shared by the tests and the fuzzer.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace punch::test {

struct GeneratedRun {
  std::vector<std::uint8_t> bytes;
  bool has_rip_data = false;
  bool has_call = false;  //!< A call that is not a call-next.
};

//! `data`: where RIP-relative operands point (a few KiB of readable data).
inline GeneratedRun generate_run(std::mt19937_64& rng, std::uint64_t address, std::uint64_t data) {
  struct Insn {
    std::vector<std::uint8_t> bytes;
    int field = -1, size = 0;  // relative field, if any
    enum { kNone, kIndex, kAbsolute } kind = kNone;
    std::size_t index = 0;
    std::uint64_t absolute = 0;
  };
  // clang-format off
  auto pick = [&](std::uint64_t n) { return static_cast<int>(rng() % n); };
  auto reg = [&] {
    int r;
    do r = pick(16); while (r == 4);  // never rsp
    return r;
  };
  auto rex = [](int w, int r, int b) { return static_cast<std::uint8_t>(0x40 | (w << 3) | ((r >> 3) << 2) | (b >> 3)); };
  auto le = [](std::vector<std::uint8_t>& v, std::uint64_t x, int n) {
    for (int i = 0; i < n; ++i) v.push_back(static_cast<std::uint8_t>(x >> (8 * i)));
  };

  const int count = 1 + pick(8);
  std::vector<Insn> insns;
  GeneratedRun out;
  for (int k = 0; k < count; ++k) {
    Insn in;
    auto& b = in.bytes;
    auto branch_to_somewhere = [&](int size) {
      in.field = static_cast<int>(b.size()) - size;
      in.size = size;
      switch (pick(4)) {
        case 0: in.kind = Insn::kIndex; in.index = static_cast<std::size_t>(pick(count + 1)); break;  // inside or end
        case 1: in.kind = Insn::kAbsolute; in.absolute = address - 1 - pick(100); break;
        default: in.kind = Insn::kAbsolute; in.absolute = address + 64 + pick(size == 1 ? 40 : 100000); break;
      }
    };
    auto rip_operand = [&](std::size_t imm_after) {
      in.field = static_cast<int>(b.size()) - 4 - static_cast<int>(imm_after);
      in.size = 4;
      in.kind = Insn::kAbsolute;
      in.absolute = data + pick(4000);
      out.has_rip_data = true;
    };
    const int r = reg(), s = reg();
    switch (pick(18)) {
      case 0: b = {rex(1, s, r), 0x89, static_cast<std::uint8_t>(0xC0 | ((s & 7) << 3) | (r & 7))}; break;
      case 1: {
        static const std::uint8_t ops[] = {0x01, 0x29, 0x31, 0x21, 0x09, 0x39, 0x11, 0x19};
        b = {rex(1, s, r), ops[pick(8)], static_cast<std::uint8_t>(0xC0 | ((s & 7) << 3) | (r & 7))};
        break;
      }
      case 2: b = {rex(1, 0, r), 0xFF, static_cast<std::uint8_t>(0xC0 | (pick(2) << 3) | (r & 7))}; break;  // inc/dec
      case 3: b = {rex(1, 0, r), static_cast<std::uint8_t>(0xB8 | (r & 7))}; le(b, rng(), 8); break;  // movabs
      case 4: b = {rex(1, r, 0), static_cast<std::uint8_t>(pick(2) ? 0x8B : 0x8D), static_cast<std::uint8_t>(0x05 | ((r & 7) << 3)), 0, 0, 0, 0}; rip_operand(0); break;
      case 5: b = {0x83, 0x3D, 0, 0, 0, 0, static_cast<std::uint8_t>(rng())}; rip_operand(1); break;  // cmp [rip], imm8
      case 6: b = {0xC7, 0x05, 0, 0, 0, 0}; le(b, rng(), 4); rip_operand(4); break;  // mov dword [rip], imm32
      case 7: b = {rex(1, r, 0), 0x01, static_cast<std::uint8_t>(0x05 | ((r & 7) << 3)), 0, 0, 0, 0}; rip_operand(0); break;
      case 8: b = {0xF3, 0x0F, 0x7E, static_cast<std::uint8_t>(0x05 | (pick(8) << 3)), 0, 0, 0, 0}; rip_operand(0); break;
      case 9: b = {0x66, 0x0F, 0x70, static_cast<std::uint8_t>(0x05 | (pick(8) << 3)), 0, 0, 0, 0, static_cast<std::uint8_t>(rng())}; rip_operand(1); break;
      case 10: b = {0xEB, 0}; branch_to_somewhere(1); break;
      case 11: b = {0xE9, 0, 0, 0, 0}; branch_to_somewhere(4); break;
      case 12: b = {static_cast<std::uint8_t>(0x70 | pick(16)), 0}; branch_to_somewhere(1); break;
      case 13: b = {0x0F, static_cast<std::uint8_t>(0x80 | pick(16)), 0, 0, 0, 0}; branch_to_somewhere(4); break;
      case 14: b = {static_cast<std::uint8_t>(0xE0 + pick(4)), 0}; branch_to_somewhere(1); break;  // loopne/loope/loop/jrcxz
      case 15: b = {0xE8, 0, 0, 0, 0}; in.field = 1; in.size = 4; in.kind = Insn::kIndex; in.index = k + 1; break;  // call next
      case 16: b = {rex(0, 0, r), static_cast<std::uint8_t>((pick(2) ? 0x50 : 0x58) | (r & 7))}; break;  // push/pop
      default:
        if (k == count - 1) {  // A final call out of the run.
          b = {0xE8, 0, 0, 0, 0};
          in.field = 1; in.size = 4; in.kind = Insn::kAbsolute; in.absolute = address + 200 + pick(1000);
          out.has_call = true;
        } else {
          b = {rex(1, r, s), 0x8D, static_cast<std::uint8_t>(0x40 | ((r & 7) << 3) | (s & 7)), static_cast<std::uint8_t>(rng())};
          if ((s & 7) == 4) b = {0x90};  // [r12+disp8] needs a SIB byte: a nop instead
        }
        break;
    }
    // clang-format on
    insns.push_back(in);
  }
  // Lay out, then fill relative fields (a rel8 that cannot reach targets the next instruction).
  std::vector<std::uint64_t> at(insns.size() + 1, address);
  for (std::size_t i = 0; i < insns.size(); ++i) at[i + 1] = at[i] + insns[i].bytes.size();
  for (std::size_t i = 0; i < insns.size(); ++i) {
    Insn& in = insns[i];
    if (in.kind == Insn::kNone) continue;
    const std::uint64_t to = in.kind == Insn::kIndex ? at[in.index] : in.absolute;
    std::int64_t rel = static_cast<std::int64_t>(to - at[i + 1]);
    if (in.size == 1 && (rel < -128 || rel > 127)) rel = 0;
    for (int j = 0; j < in.size; ++j) in.bytes[in.field + j] = static_cast<std::uint8_t>(rel >> (8 * j));
    out.bytes.insert(out.bytes.end(), in.bytes.begin(), in.bytes.end());
    continue;
  }
  out.bytes.clear();
  for (const Insn& in : insns) out.bytes.insert(out.bytes.end(), in.bytes.begin(), in.bytes.end());
  return out;
}

}  // namespace punch::test
