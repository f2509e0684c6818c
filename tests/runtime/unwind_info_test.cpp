// Unwind info of JIT code: FrameDescription -> rows -> .eh_frame bytes, registered with libgcc.
#include <punch/runtime/frame_description.hpp>

#include <asmjit/x86.h>
#include <gtest/gtest.h>

#include <cstring>

#include <punch/runtime/eh_frame.hpp>

#include "eh_frame_writer.hpp"
#include "frame_rows.hpp"
#include "registered_frames.hpp"
#include "unwind_table.hpp"

// libgcc: the FDE covering pc among registered frames and loaded objects.
struct UnwindBases {
  void* tbase;
  void* dbase;
  void* func;
};
extern "C" const void* _Unwind_Find_FDE(void* pc, UnwindBases* bases);

namespace punch::runtime {
namespace {

using namespace asmjit;
using detail::FrameRow;
using Op = FrameDescription::Step::Op;

FuncFrame make_frame(bool preserve_fp, std::uint32_t locals) {
  FuncDetail func;
  func.init(FuncSignatureT<void>(CallConvId::kHost), Environment::host());
  FuncFrame frame;
  frame.init(func);
  if (preserve_fp) frame.setPreservedFP();
  frame.addDirtyRegs(x86::rbx, x86::r12);
  frame.setLocalStackSize(locals);
  frame.finalize();
  return frame;
}

TEST(FrameDescription, FromFuncFrameFollowsAsmjitsOwnPrologueAndEpilogue) {
  // push rbp (1) ; mov rbp, rsp (3) ; push rbx (1) ; push r12 (2) ; sub rsp, 32 (4): ends at 1, 4, 5, 7, 11.
  const std::uint32_t epilog_at = 100;
  auto d = FrameDescription::from_func_frame(make_frame(true, 32), 0, std::span(&epilog_at, 1));
  ASSERT_TRUE(d) << d.error().describe();
  ASSERT_GE(d->steps.size(), 5u);
  EXPECT_EQ(d->steps[0].offset, 1u);
  EXPECT_EQ(d->steps[0].op, Op::kPush);
  EXPECT_EQ(d->steps[1].offset, 4u);
  EXPECT_EQ(d->steps[1].op, Op::kSetFramePointer);
  EXPECT_EQ(d->steps[2].offset, 5u);
  EXPECT_EQ(d->steps[2].reg, x86::rbx.id());
  EXPECT_EQ(d->steps[3].offset, 7u);
  EXPECT_EQ(d->steps[3].reg, x86::r12.id());
  EXPECT_EQ(d->steps[4].offset, 11u);
  EXPECT_EQ(d->steps[4].op, Op::kAdjustStack);
  EXPECT_EQ(d->steps[4].amount, 32);

  auto rows = detail::frame_rows(*d, 200);
  ASSERT_TRUE(rows) << rows.error().describe();
  // In the body: CFA = rbp + 16, rbp at CFA-16, rbx at CFA-24, r12 at CFA-32.
  const FrameRow* body = nullptr;
  for (const auto& r : *rows)
    if (r.offset <= 50) body = &r;
  ASSERT_NE(body, nullptr);
  EXPECT_TRUE(body->cfa_on_rbp);
  EXPECT_EQ(body->cfa_offset, 16);
  EXPECT_EQ(body->saved[x86::rbp.id()], 2);
  EXPECT_EQ(body->saved[x86::rbx.id()], 3);
  EXPECT_EQ(body->saved[x86::r12.id()], 4);
  // After the epilogue's ret (lea rsp; pop r12; pop rbx; pop rbp; ret) the body's frame is back.
  EXPECT_EQ(rows->back(), (FrameRow{rows->back().offset, body->cfa_on_rbp, body->cfa_offset, body->saved}));
  // Just before the ret: CFA = rsp + 8, nothing saved.
  const FrameRow& before_ret = (*rows)[rows->size() - 2];
  EXPECT_FALSE(before_ret.cfa_on_rbp);
  EXPECT_EQ(before_ret.cfa_offset, 8);
  EXPECT_EQ(before_ret.saved, (std::array<std::uint8_t, 16>{}));
}

TEST(FrameDescription, FramelessAdjustFollowsRsp) {
  auto rows = detail::frame_rows(FrameDescription::frameless(24, 4), 32);
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].cfa_offset, 8);
  EXPECT_EQ((*rows)[1].offset, 4u);
  EXPECT_EQ((*rows)[1].cfa_offset, 32);
  EXPECT_FALSE((*rows)[1].cfa_on_rbp);
}

TEST(FrameDescription, BadStepsAreRefusedNamingTheStep) {
  FrameDescription d;
  d.steps.push_back({8, Op::kAdjustStack, 0, 16});
  d.steps.push_back({4, Op::kAdjustStack, 0, -16});
  auto rows = detail::frame_rows(d, 32);
  ASSERT_FALSE(rows);
  EXPECT_NE(rows.error().message.find("step 1 at +4"), std::string::npos) << rows.error().describe();
  EXPECT_FALSE(detail::frame_rows(FrameDescription::frameless(8, 40), 32));  // Past the end.
  FrameDescription pop;
  pop.steps.push_back({1, Op::kPop, 3});
  EXPECT_FALSE(detail::frame_rows(pop, 32));  // Pops the return address.
  FrameDescription restore;
  restore.steps.push_back({1, Op::kRestore});
  EXPECT_FALSE(detail::frame_rows(restore, 32));
}

// A .eh_frame_hdr search table for `eh_frame` placed right after it, so the reader can find FDEs.
std::vector<std::uint8_t> with_search_table(const std::vector<std::uint8_t>& eh_frame, std::uintptr_t base,
                                            std::span<const std::pair<std::uintptr_t, std::size_t>> fdes) {
  std::vector<std::uint8_t> bytes = eh_frame;
  const std::uintptr_t hdr = base + bytes.size();
  auto put32 = [&](std::int64_t v) {
    const auto x = static_cast<std::int32_t>(v);
    const auto at = bytes.size();
    bytes.resize(at + 4);
    std::memcpy(bytes.data() + at, &x, 4);
  };
  for (std::uint8_t b : {1, 0x1b, 0x03, 0x3b}) bytes.push_back(b);  // version, pcrel|sdata4, udata4, datarel|sdata4
  put32(static_cast<std::int64_t>(base) - static_cast<std::int64_t>(hdr + 4));
  put32(static_cast<std::int64_t>(fdes.size()));
  for (auto [start, fde_offset] : fdes) {
    put32(static_cast<std::int64_t>(start) - static_cast<std::int64_t>(hdr));
    put32(static_cast<std::int64_t>(base + fde_offset) - static_cast<std::int64_t>(hdr));
  }
  return bytes;
}

TEST(EhFrameWriter, RoundTripsThroughTheReader) {
  const std::uintptr_t base = 0x7000'0001'0000, f1 = 0x7000'0000'1000, f2 = 0x7000'0000'2000;
  auto rows1 = detail::frame_rows(FrameDescription::frame_pointer(0), 0x80);
  auto rows2 = detail::frame_rows(FrameDescription::frameless(8, 4), 0x40);
  ASSERT_TRUE(rows1 && rows2);
  const detail::FunctionFrame frames[] = {{f1, 0x80, *rows1}, {f2, 0x40, *rows2}};
  const auto eh_frame = detail::write_eh_frame(frames);
  // CIE, then the FDEs in order: find their offsets by walking the lengths.
  std::vector<std::size_t> records;
  for (std::size_t at = 0;;) {
    std::uint32_t length;
    std::memcpy(&length, eh_frame.data() + at, 4);
    if (length == 0) {
      EXPECT_EQ(at + 4, eh_frame.size());  // Terminator last.
      break;
    }
    EXPECT_EQ(length % 8, 4u);  // Records are 8-byte aligned.
    records.push_back(at);
    at += 4 + length;
  }
  ASSERT_EQ(records.size(), 3u);
  const std::pair<std::uintptr_t, std::size_t> table[] = {{f1, records[1]}, {f2, records[2]}};
  const auto bytes = with_search_table(eh_frame, base, table);
  const UnwindTables tables{bytes, base, base + eh_frame.size()};
  auto r1 = find_fde(tables, f1 + 0x7f);
  ASSERT_TRUE(r1) << r1.error().describe();
  EXPECT_EQ(r1->start, f1);
  EXPECT_EQ(r1->end, f1 + 0x80);
  auto r2 = find_fde(tables, f2);
  ASSERT_TRUE(r2) << r2.error().describe();
  EXPECT_EQ(r2->end, f2 + 0x40);
  EXPECT_FALSE(find_fde(tables, f2 + 0x40));
}

// Code-like memory libgcc can be asked about (never run): a static buffer.
alignas(64) std::uint8_t g_fake_code[256];

TEST(RegisteredFrames, ReleasedThenReusedRangeIsNeverFoundWithStaleInfo) {
  const auto start = reinterpret_cast<std::uintptr_t>(g_fake_code);
  auto* late_pc = reinterpret_cast<void*>(start + 200);
  const std::vector<detail::FrameRow> fp = *detail::frame_rows(FrameDescription::frame_pointer(0), 256);
  const detail::FrameToRegister old_code{start, 256, fp};
  detail::register_frames(std::span(&old_code, 1));
  UnwindBases bases{};
  ASSERT_NE(_Unwind_Find_FDE(late_pc, &bases), nullptr);
  EXPECT_EQ(bases.func, g_fake_code);
  detail::FrameRow row;
  std::uintptr_t found = 0;
  ASSERT_TRUE(detail::unwind_table_find(start + 200, row, found));
  EXPECT_TRUE(row.cfa_on_rbp);

  // Released: no FDE, no row. Reused by shorter, frameless code: the late pc has none either.
  const code_events::ReleasedCode old_range{start, 256};
  detail::deregister_frames(std::span(&old_range, 1));
  EXPECT_EQ(_Unwind_Find_FDE(late_pc, &bases), nullptr);
  EXPECT_FALSE(detail::unwind_table_find(start + 200, row, found));
  const std::vector<detail::FrameRow> frameless = *detail::frame_rows(FrameDescription::frameless(16, 4), 128);
  const detail::FrameToRegister new_code{start, 128, frameless};
  detail::register_frames(std::span(&new_code, 1));
  EXPECT_EQ(_Unwind_Find_FDE(late_pc, &bases), nullptr);
  ASSERT_NE(_Unwind_Find_FDE(reinterpret_cast<void*>(start + 100), &bases), nullptr);
  EXPECT_EQ(bases.func, g_fake_code);
  ASSERT_TRUE(detail::unwind_table_find(start + 100, row, found));
  EXPECT_FALSE(row.cfa_on_rbp);
  EXPECT_EQ(row.cfa_offset, 24);
  const code_events::ReleasedCode new_range{start, 128};
  detail::deregister_frames(std::span(&new_range, 1));
  EXPECT_EQ(_Unwind_Find_FDE(reinterpret_cast<void*>(start + 100), &bases), nullptr);
}

}  // namespace
}  // namespace punch::runtime

// Through Jit: exceptions, _Unwind_Backtrace and release.
#include <punch/runtime/jit.hpp>
#include <unwind.h>

#include <stdexcept>

#include "own_heap_fixture.hpp"

namespace punch::runtime {
namespace {

[[gnu::noinline]] void throw_if(int yes) {
  asm volatile("");
  if (yes) throw std::runtime_error("from below a JIT frame");
}

// Addresses _Unwind_Backtrace sees from inside a callee of the JIT function.
std::vector<std::uintptr_t> g_unwound;
[[gnu::noinline]] void record_backtrace(int) {
  g_unwound.clear();
  _Unwind_Backtrace(
      [](_Unwind_Context* ctx, void*) {
        g_unwound.push_back(_Unwind_GetIP(ctx));
        return g_unwound.size() < 64 ? _URC_NO_REASON : _URC_END_OF_STACK;
      },
      nullptr);
  asm volatile("");
}

// void f(int x) { rbx = garbage; callee(x); } with asmjit's prologue/epilogue, rbx saved.
struct Emitted {
  asmjit::CodeHolder code;
  FrameDescription frame;
};
void emit_caller_of(Emitted& e, void (*callee)(int)) {
  using namespace asmjit;
  e.code.init(Jit::environment());
  x86::Assembler a(&e.code);
  FuncDetail func;
  func.init(FuncSignatureT<void, int>(CallConvId::kHost), Environment::host());
  FuncFrame frame;
  frame.init(func);
  frame.setPreservedFP();
  frame.setFuncCalls();
  frame.addDirtyRegs(x86::rbx);
  frame.finalize();
  const auto prolog = static_cast<std::uint32_t>(a.offset());
  a.emitProlog(frame);
  a.mov(x86::rbx, 0x0bad'0bad);
  a.mov(x86::rax, imm(reinterpret_cast<std::uint64_t>(callee)));
  a.call(x86::rax);
  const auto epilog = static_cast<std::uint32_t>(a.offset());
  a.emitEpilog(frame);
  auto d = FrameDescription::from_func_frame(frame, prolog, std::span(&epilog, 1));
  ASSERT_TRUE(d) << d.error().describe();
  e.frame = std::move(*d);
}

class JitUnwindTest : public test::OwnHeapTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(make_heap(64 * 1024));
    jit = std::make_unique<Jit>(*heap);
  }
  std::unique_ptr<Jit> jit;
};

TEST_F(JitUnwindTest, CxxExceptionThrownBelowAJitFrameIsCaughtAboveIt) {
  Emitted e;
  ASSERT_NO_FATAL_FAILURE(emit_caller_of(e, &throw_if));
  auto fn = jit->add_as<void (*)(int)>(e.code, {"jit_calls_thrower", e.frame});
  ASSERT_TRUE(fn) << fn.error().describe();
  (*fn)(0);
  bool caught = false;
  try {
    (*fn)(1);
  } catch (const std::runtime_error& err) {
    caught = std::string(err.what()) == "from below a JIT frame";
  }
  EXPECT_TRUE(caught);
  ASSERT_TRUE(jit->release(reinterpret_cast<void*>(*fn)));
}

TEST_F(JitUnwindTest, UnwindBacktraceContinuesPastTheJitFrameToItsCaller) {
  Emitted e;
  ASSERT_NO_FATAL_FAILURE(emit_caller_of(e, &record_backtrace));
  auto fn = jit->add_as<void (*)(int)>(e.code, {"jit_calls_recorder", e.frame});
  ASSERT_TRUE(fn) << fn.error().describe();
  (*fn)(0);
  const auto start = reinterpret_cast<std::uintptr_t>(*fn);
  std::size_t jit_frame = g_unwound.size();
  for (std::size_t i = 0; i < g_unwound.size(); ++i)
    if (g_unwound[i] > start && g_unwound[i] < start + e.code.codeSize()) jit_frame = i;
  ASSERT_LT(jit_frame, g_unwound.size()) << "the JIT frame is not in the backtrace";
  EXPECT_GT(g_unwound.size(), jit_frame + 2) << "the backtrace stops at the JIT frame";
  ASSERT_TRUE(jit->release(reinterpret_cast<void*>(*fn)));
}

TEST_F(JitUnwindTest, ReleasedFunctionsUnwindInfoIsGoneBeforeItsMemoryIsReused) {
  Emitted e;
  ASSERT_NO_FATAL_FAILURE(emit_caller_of(e, &throw_if));
  const std::size_t before = detail::registered_frame_count();
  auto fn = jit->add(e.code, {"long_one", e.frame});
  ASSERT_TRUE(fn);
  EXPECT_EQ(detail::registered_frame_count(), before + 1);
  const auto start = reinterpret_cast<std::uintptr_t>(*fn);
  auto* late_pc = reinterpret_cast<void*>(start + e.code.codeSize() - 1);
  UnwindBases bases{};
  ASSERT_NE(_Unwind_Find_FDE(late_pc, &bases), nullptr);
  ASSERT_TRUE(jit->release(*fn));
  EXPECT_EQ(detail::registered_frame_count(), before);
  EXPECT_EQ(_Unwind_Find_FDE(late_pc, &bases), nullptr);

  // The same memory, now a 3-byte frameless function: the late pc has no FDE.
  asmjit::CodeHolder small;
  small.init(Jit::environment());
  asmjit::x86::Assembler a(&small);
  a.xor_(asmjit::x86::eax, asmjit::x86::eax);
  a.ret();
  auto reused = jit->add(small, {"short_one", FrameDescription::frameless()});
  ASSERT_TRUE(reused);
  ASSERT_EQ(*reused, *fn) << "the heap did not reuse the range; the test proves nothing";
  EXPECT_EQ(_Unwind_Find_FDE(late_pc, &bases), nullptr);
  ASSERT_NE(_Unwind_Find_FDE(*reused, &bases), nullptr);
  EXPECT_EQ(bases.func, *reused);
  ASSERT_TRUE(jit->release(*reused));
}

TEST_F(JitUnwindTest, AFrameDescriptionPastTheCodeIsRefusedBeforeAnythingIsWritten) {
  asmjit::CodeHolder code;
  code.init(Jit::environment());
  asmjit::x86::Assembler a(&code);
  a.ret();
  const std::size_t before = detail::registered_frame_count();
  auto fn = jit->add(code, {"bad_frame", FrameDescription::frameless(8, 100)});
  ASSERT_FALSE(fn);
  EXPECT_EQ(fn.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(fn.error().message.find("past the end"), std::string::npos) << fn.error().describe();
  EXPECT_EQ(detail::registered_frame_count(), before);
}

}  // namespace
}  // namespace punch::runtime

// The object gdb reads: an x86-64 ET_REL whose .text is NOBITS at the code's
// address, one FUNC symbol per function (relative to .text), and the .eh_frame bytes.
#include <elf.h>

#include "gdb_elf.hpp"

namespace punch::runtime {
namespace {

TEST(GdbObject, TextSectionSitsAtTheCodeAndEachFunctionHasASymbol) {
  const std::uintptr_t base = 0x7f00'1234'0000;
  const detail::GdbSymbol symbols[] = {{base, 0x40, "first"}, {base + 0x40, 0x20, "punch:trampoline:puts"}};
  const std::vector<std::uint8_t> eh_frame = {1, 2, 3, 4, 5, 6, 7, 8};
  const auto object = detail::build_gdb_object(base, 0x60, symbols, eh_frame);

  Elf64_Ehdr header;
  ASSERT_GE(object.size(), sizeof header);
  std::memcpy(&header, object.data(), sizeof header);
  EXPECT_EQ(std::memcmp(header.e_ident, ELFMAG, SELFMAG), 0);
  EXPECT_EQ(header.e_ident[EI_CLASS], ELFCLASS64);
  EXPECT_EQ(header.e_type, ET_REL);
  EXPECT_EQ(header.e_machine, EM_X86_64);
  ASSERT_LE(header.e_shoff + header.e_shnum * sizeof(Elf64_Shdr), object.size());
  std::vector<Elf64_Shdr> sections(header.e_shnum);
  std::memcpy(sections.data(), object.data() + header.e_shoff, header.e_shnum * sizeof(Elf64_Shdr));
  const char* names = reinterpret_cast<const char*>(object.data() + sections[header.e_shstrndx].sh_offset);
  auto find = [&](std::string_view name) -> const Elf64_Shdr* {
    for (const auto& s : sections)
      if (name == names + s.sh_name) return &s;
    return nullptr;
  };
  const Elf64_Shdr* text = find(".text");
  const Elf64_Shdr* eh = find(".eh_frame");
  const Elf64_Shdr* symtab = find(".symtab");
  ASSERT_TRUE(text && eh && symtab);
  EXPECT_EQ(text->sh_type, SHT_NOBITS);
  EXPECT_EQ(text->sh_addr, base);
  EXPECT_EQ(text->sh_size, 0x60u);
  ASSERT_EQ(eh->sh_size, eh_frame.size());
  EXPECT_EQ(std::memcmp(object.data() + eh->sh_offset, eh_frame.data(), eh_frame.size()), 0);

  const char* strings = reinterpret_cast<const char*>(object.data() + sections[symtab->sh_link].sh_offset);
  ASSERT_EQ(symtab->sh_size / sizeof(Elf64_Sym), 3u);  // The null symbol, then one per function.
  for (std::size_t i = 0; i < 2; ++i) {
    Elf64_Sym sym;
    std::memcpy(&sym, object.data() + symtab->sh_offset + (i + 1) * sizeof sym, sizeof sym);
    EXPECT_EQ(std::string_view(strings + sym.st_name), symbols[i].name);
    EXPECT_EQ(ELF64_ST_TYPE(sym.st_info), STT_FUNC);
    EXPECT_EQ(sym.st_value, symbols[i].start - base);
    EXPECT_EQ(sym.st_size, symbols[i].size);
    EXPECT_EQ(&sections[sym.st_shndx], text);
  }
}

}  // namespace
}  // namespace punch::runtime
