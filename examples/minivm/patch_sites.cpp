// Until punch's patch-point API lands, the sites are changed through
// punch::patcher::Transaction: each site is one whole instruction, so the
// live protocol needs no fix-up round for it.
#include "patch_sites.hpp"

#include <cstring>
#include <vector>

#include <punch/patcher/transaction.hpp>

namespace minivm::patch {
namespace {

using Bytes = std::vector<std::uint8_t>;

constexpr std::uint8_t kNop5[] = {0x0F, 0x1F, 0x44, 0x00, 0x00};

// `opcode rel32`, after `prefix` bytes, at `site`.
Bytes rel32_instruction(Bytes prefix, std::uint8_t opcode, std::uintptr_t site, std::uintptr_t target) {
  Bytes out = std::move(prefix);
  out.push_back(opcode);
  const std::int64_t rel = static_cast<std::int64_t>(target) - static_cast<std::int64_t>(site + out.size() + 4);
  const std::int32_t rel32 = static_cast<std::int32_t>(rel);
  out.resize(out.size() + 4);
  std::memcpy(out.data() + out.size() - 4, &rel32, 4);
  return out;
}

bool in_rel32_reach(std::uintptr_t site, std::size_t length, std::uintptr_t target) {
  const std::int64_t rel = static_cast<std::int64_t>(target) - static_cast<std::int64_t>(site + length);
  return rel >= INT32_MIN && rel <= INT32_MAX;
}

// asmjit emits a call to an address as `40 E8 rel32` (a REX prefix that
// keeps room for `FF 15 disp32`, its form when the target is out of reach).
std::size_t call_prefix_length(std::uintptr_t site) {
  std::uint8_t bytes[2];
  std::memcpy(bytes, reinterpret_cast<const void*>(site), 2);
  if (bytes[0] == 0xE8) return 0;
  if (bytes[0] == 0x40 && bytes[1] == 0xE8) return 1;
  return SIZE_MAX;
}

punch::patcher::TransactionOptions options() {
  punch::patcher::TransactionOptions o;
  o.hold_threads = false;  // minivm's threads never block SIGTRAP.
  return o;
}

punch::Status add_site(punch::patcher::Transaction& tx, Code code, std::uintptr_t site, Bytes expected, Bytes bytes) {
  punch::patcher::Site s;
  s.address = site;
  s.expected = std::move(expected);
  s.replacement = std::move(bytes);
  s.function = punch::disasm::FunctionExtent{code.begin, code.end, punch::disasm::FunctionExtent::Source::kCaller};
  return tx.add(std::move(s));
}

}  // namespace

asmjit::Label emit_imm32(asmjit::x86::Assembler& a, asmjit::x86::Gp reg, std::uint32_t value) {
  asmjit::Label at = a.newLabel();
  a.bind(at);
  // Spelled out so the immediate always has its four bytes (B8+r imm32), even for 0.
  std::uint8_t bytes[5] = {static_cast<std::uint8_t>(0xB8 + (reg.id() & 7)), 0, 0, 0, 0};
  std::memcpy(bytes + 1, &value, 4);
  if (reg.id() >= 8) a.db(0x41);  // REX.B for r8d..r15d.
  a.embed(bytes, sizeof bytes);
  return at;
}

asmjit::Label emit_call(asmjit::x86::Assembler& a, std::uint64_t target) {
  asmjit::Label at = a.newLabel();
  a.bind(at);
  a.call(asmjit::imm(target));
  return at;
}

asmjit::Label emit_guard(asmjit::x86::Assembler& a) {
  asmjit::Label at = a.newLabel();
  a.bind(at);
  a.embed(kNop5, sizeof kNop5);
  return at;
}

punch::Status set_imm32(Code code, std::uintptr_t site, std::uint32_t expected, std::uint32_t value) {
  std::uint8_t opcode = 0;
  std::memcpy(&opcode, reinterpret_cast<const void*>(site), 1);  // B8+r: the register stays as emitted.
  if (opcode < 0xB8 || opcode > 0xBF)
    return punch::fail(punch::ErrorCode::kBytesMismatch, site, "not a `mov r32, imm32` patch point");
  Bytes before{opcode, 0, 0, 0, 0}, after{opcode, 0, 0, 0, 0};
  std::memcpy(before.data() + 1, &expected, 4);
  std::memcpy(after.data() + 1, &value, 4);
  punch::patcher::Transaction tx(options());
  if (auto ok = add_site(tx, code, site, std::move(before), std::move(after)); !ok) return ok;
  return tx.commit();
}

bool is_call_site(std::uintptr_t site) { return call_prefix_length(site) != SIZE_MAX; }

punch::Status retarget_calls(std::span<const Retarget> sites) {
  if (sites.empty()) return {};
  punch::patcher::Transaction tx(options());
  for (const Retarget& r : sites) {
    const std::size_t prefix = call_prefix_length(r.site);
    if (prefix == SIZE_MAX) return punch::fail(punch::ErrorCode::kBytesMismatch, r.site, "not a `call rel32` patch point");
    if (!in_rel32_reach(r.site, prefix + 5, r.to))
      return punch::fail(punch::ErrorCode::kOutOfRange, r.site, "call target out of rel32 reach");
    const Bytes rex(prefix, 0x40);
    if (auto ok = add_site(tx, r.code, r.site, rel32_instruction(rex, 0xE8, r.site, r.from),
                           rel32_instruction(rex, 0xE8, r.site, r.to));
        !ok)
      return ok;
  }
  return tx.commit();
}

punch::Status trip_guards(std::span<const Trip> guards) {
  if (guards.empty()) return {};
  punch::patcher::Transaction tx(options());
  for (const Trip& g : guards) {
    if (!in_rel32_reach(g.site, 5, g.exit))
      return punch::fail(punch::ErrorCode::kOutOfRange, g.site, "guard exit out of rel32 reach");
    if (auto ok = add_site(tx, g.code, g.site, Bytes(kNop5, kNop5 + 5), rel32_instruction({}, 0xE9, g.site, g.exit));
        !ok)
      return ok;
  }
  return tx.commit();
}

}  // namespace minivm::patch
