// Emitting a mid hook's stub with asmjit: save the thread's state, call the detour, restore, resume.
#include "mid_hook_stub.hpp"

#include <cpuid.h>

#include <algorithm>
#include <cstddef>
#include <string>

#include <asmjit/x86.h>

#include <punch/patcher/mid_hook.hpp>

namespace punch::patcher::detail {
namespace {

namespace x86 = asmjit::x86;

// The System V red zone: a leaf function may keep data in the 128 bytes below rsp.
constexpr int kRedZone = 128;
constexpr int kContextSize = static_cast<int>(sizeof(MidContext));
static_assert(offsetof(MidContext, rflags) == 0, "pushfq stores rflags at the context's first byte");
static_assert(sizeof(MidContext) % 16 == 0);

// XTILECFG and XTILEDATA (AMX): 8 KiB a detour written in C++ never touches.
constexpr std::uint64_t kAmxComponents = (1ULL << 17) | (1ULL << 18);
// The legacy region (512 bytes) and the XSAVE header (64 bytes).
constexpr std::uint32_t kXsaveHeaderEnd = 576;
constexpr int kXsaveHeader = 512;

std::uint64_t xgetbv0() {
  std::uint32_t low = 0, high = 0;
  asm volatile("xgetbv" : "=a"(low), "=d"(high) : "c"(0));
  return (std::uint64_t{high} << 32) | low;
}

VectorSave probe_vector_save() {
  VectorSave v;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d) == 0 || (c & bit_OSXSAVE) == 0) return v;  // fxsave.
  v.xsave = true;
  v.mask = xgetbv0() & ~kAmxComponents;
  // xsavec (cpuid 0xD.1 eax bit 1): the init optimization only, never the
  // "modified" one of xsaveopt, which would trust a stack area others reuse.
  v.compacted = __get_cpuid_count(0xD, 1, &a, &b, &c, &d) != 0 && (a & 2) != 0;
  // Room for either layout: standard (component i at its cpuid offset) or
  // compacted (in order, some aligned to 64).
  std::uint32_t standard = kXsaveHeaderEnd, compacted = kXsaveHeaderEnd;
  for (unsigned i = 2; i < 63; ++i) {
    if ((v.mask & (1ULL << i)) == 0) continue;
    if (__get_cpuid_count(0xD, i, &a, &b, &c, &d) == 0) continue;
    standard = std::max(standard, a + b);
    if ((c & 2) != 0) compacted = (compacted + 63) & ~63u;
    compacted += a;
  }
  v.size = std::max(standard, compacted);
  return v;
}

x86::Mem slot(const x86::Gp& base, std::size_t offset) { return x86::qword_ptr(base, static_cast<int>(offset)); }

// The general registers other than rsp, with their context offsets.
struct Gpr {
  x86::Gp reg;
  std::size_t offset;
};
const Gpr kGprs[] = {
    {x86::rax, offsetof(MidContext, rax)}, {x86::rcx, offsetof(MidContext, rcx)}, {x86::rdx, offsetof(MidContext, rdx)},
    {x86::rbx, offsetof(MidContext, rbx)}, {x86::rbp, offsetof(MidContext, rbp)}, {x86::rsi, offsetof(MidContext, rsi)},
    {x86::rdi, offsetof(MidContext, rdi)}, {x86::r8, offsetof(MidContext, r8)},   {x86::r9, offsetof(MidContext, r9)},
    {x86::r10, offsetof(MidContext, r10)}, {x86::r11, offsetof(MidContext, r11)}, {x86::r12, offsetof(MidContext, r12)},
    {x86::r13, offsetof(MidContext, r13)}, {x86::r14, offsetof(MidContext, r14)}, {x86::r15, offsetof(MidContext, r15)},
};

x86::Mem xmm_slot(int i) {
  return x86::xmmword_ptr(x86::rbx, static_cast<int>(offsetof(MidContext, xmm) + 16 * static_cast<std::size_t>(i)));
}

void emit(x86::Assembler& a, const MidStub& stub, const VectorSave& v) {
  using namespace asmjit::x86;
  a.endbr64();  // The entry jump may go through a relay's indirect jmp.
  // Below the red zone, leave room for the context and let pushfq fill its first field.
  a.lea(rsp, ptr(rsp, -(kRedZone + kContextSize - 8)));
  a.pushfq();  // rsp == &context from here on.
  for (const Gpr& g : kGprs) a.mov(slot(rsp, g.offset), g.reg);
  a.lea(rax, ptr(rsp, kContextSize + kRedZone));  // The thread's rsp at the hooked instruction.
  a.mov(slot(rsp, offsetof(MidContext, rsp)), rax);
  a.mov(rax, asmjit::imm(stub.rip));
  a.mov(slot(rsp, offsetof(MidContext, rip)), rax);
  a.cld();          // The ABI's promise to the detour (the hooked code may run with DF set).
  a.mov(rbx, rsp);  // rbx (callee-saved) holds &context across the call.
  if (stub.vector_registers)
    for (int i = 0; i < 16; ++i) a.movups(xmm_slot(i), xmm(static_cast<std::uint32_t>(i)));

  // The vector and x87 state below the context: the detour and whatever it
  // calls (memcpy with AVX, printf) may change any of it.
  if (stub.vector_state) {
    a.sub(rsp, v.size);
    a.and_(rsp, -64);
    if (v.xsave) {
      a.xor_(eax, eax);  // XSAVE writes only part of the header; xrstor faults on stale bits there.
      for (int q = 0; q < 8; ++q) a.mov(qword_ptr(rsp, kXsaveHeader + 8 * q), rax);
      a.mov(eax, static_cast<std::uint32_t>(v.mask));
      a.mov(edx, static_cast<std::uint32_t>(v.mask >> 32));
      if (v.compacted)
        a.xsavec64(ptr(rsp));
      else
        a.xsave64(ptr(rsp));
    } else {
      a.fxsave64(ptr(rsp));
    }
  } else {
    a.and_(rsp, -16);
  }

  // Counted while inside the call, however deep: the stub and the relocated
  // copy are freed only when no thread is (the rendezvous sees only a thread's innermost frame).
  a.mov(rax, asmjit::imm(stub.in_flight));
  a.lock().inc(qword_ptr(rax));
  a.mov(rdi, rbx);
  a.mov(rax, asmjit::imm(stub.detour));
  a.call(rax);  // rsp is 16-aligned here: the detour is an ordinary function.
  a.mov(rax, asmjit::imm(stub.in_flight));
  a.lock().dec(qword_ptr(rax));

  if (stub.vector_state && v.xsave) {
    a.mov(eax, static_cast<std::uint32_t>(v.mask));
    a.mov(edx, static_cast<std::uint32_t>(v.mask >> 32));
    a.xrstor64(ptr(rsp));  // Either layout: the header says which.
  } else if (stub.vector_state) {
    a.fxrstor64(ptr(rsp));
  }
  if (stub.vector_registers)  // Legacy-SSE loads: the upper halves xrstor restored stay.
    for (int i = 0; i < 16; ++i) a.movups(xmm(static_cast<std::uint32_t>(i)), xmm_slot(i));
  a.mov(rsp, rbx);
  for (const Gpr& g : kGprs) a.mov(g.reg, slot(rsp, g.offset));
  a.popfq();  // rsp == &context + 8: the rest of the context lies above it, safe from signals.
  a.mov(rsp, slot(rsp, offsetof(MidContext, rsp) - 8));
  a.jmp(asmjit::imm(stub.resume));
}

std::string asmjit_error(const char* what, asmjit::Error err) {
  return std::string(what) + ": " + asmjit::DebugUtils::errorAsString(err);
}

}  // namespace

VectorSave vector_save() {
  static const VectorSave v = probe_vector_save();
  return v;
}

Result<std::vector<std::uint8_t>> emit_mid_stub(const MidStub& stub, std::uintptr_t address) {
  asmjit::CodeHolder code;
  if (asmjit::Error err = code.init(asmjit::Environment(asmjit::Arch::kX64), address))
    return fail(ErrorCode::kInvalidArgument, at(address) + ": " + asmjit_error("asmjit init", err));
  x86::Assembler a(&code);
  emit(a, stub, vector_save());
  if (asmjit::Error err = a.finalize())
    return fail(ErrorCode::kInvalidArgument, at(address) + ": " + asmjit_error("asmjit finalize", err));
  if (asmjit::Error err = code.flatten())
    return fail(ErrorCode::kInvalidArgument, at(address) + ": " + asmjit_error("asmjit flatten", err));
  if (asmjit::Error err = code.resolveUnresolvedLinks())
    return fail(ErrorCode::kInvalidArgument, at(address) + ": " + asmjit_error("asmjit resolve", err));
  if (asmjit::Error err = code.relocateToBase(address))
    return fail(ErrorCode::kCannotRelocate, at(address) + ": " + asmjit_error("asmjit relocateToBase", err));
  std::vector<std::uint8_t> bytes(code.codeSize());
  if (asmjit::Error err =
          code.copyFlattenedData(bytes.data(), bytes.size(), asmjit::CopySectionFlags::kPadSectionBuffer))
    return fail(ErrorCode::kInvalidArgument, at(address) + ": " + asmjit_error("asmjit copyFlattenedData", err));
  return bytes;
}

Result<std::size_t> mid_stub_size_bound(MidStub stub) {
  // The longest forms: a resume address out of rel32 reach, a rip that needs
  // movabs (asmjit encodes what fits in 32 bits, signed or not, shorter).
  stub.resume = std::uintptr_t{1} << 46;
  stub.rip = std::uintptr_t{1} << 46;
  auto bytes = emit_mid_stub(stub, 0);
  if (!bytes) return tl::unexpected<Error>(std::move(bytes).error());
  return bytes->size();
}

}  // namespace punch::patcher::detail
