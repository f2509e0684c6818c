// Patch points: emission, checking, changes (one live Transaction per batch)
// and the retirement of invalidated code.
//
// Every change replaces one whole instruction with one whole instruction of
// the same length, so the live protocol never needs the fix-up round, and the
// trap handler carries out the old instruction itself for calls, jumps, nops
// and constant loads (no out-of-line copy). A site's container is the global
// heap allocation that holds it (one read and decode per function, and
// neighbouring points share writes), or, for code elsewhere, its own
// instruction (see State::add).
#include <punch/patcher/patch_point.hpp>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include <punch/disasm/instruction.hpp>
#include <punch/runtime/code_heap.hpp>
#include <punch/runtime/fork_safe_mutex.hpp>
#include <punch/runtime/safe_read.hpp>
#include <punch/runtime/threads.hpp>

#include "lock_ranks.hpp"

namespace punch::patcher {
namespace {

namespace x86 = asmjit::x86;

constexpr std::uint8_t kNop5[5] = {0x0F, 0x1F, 0x44, 0x00, 0x00};  // nop dword [rax+rax*1+0]
constexpr std::size_t kMaxPointSize = 13;                          // mov r11, imm64; call r11

// ---- Emission -----------------------------------------------------------

PatchPointMark bind_mark(x86::Assembler& a, PatchPointKind kind, std::uintptr_t target) {
  PatchPointMark mark{a.newLabel(), kind, target};
  a.bind(mark.label);
  return mark;
}

// The REX prefix for a 64-bit operation with `reg` in ModRM.reg (r) or in the opcode/ModRM.rm (b).
std::uint8_t rex_w(const x86::Gp& reg, bool in_reg_field) {
  return static_cast<std::uint8_t>(0x48 | (reg.id() >= 8 ? (in_reg_field ? 0x04 : 0x01) : 0));
}

// Emits `opcode` followed by a rel32 that asmjit relocates to `target` when
// the code gets its address (RelocType::kAbsToRel: target - end of the instruction).
void emit_rel32_to(x86::Assembler& a, std::initializer_list<std::uint8_t> opcode, std::uintptr_t target) {
  const std::size_t start = a.offset();
  for (std::uint8_t b : opcode) a.db(b);
  a.dd(0);
  asmjit::RelocEntry* reloc = nullptr;
  if (a.code()->newRelocEntry(&reloc, asmjit::RelocType::kAbsToRel) != asmjit::kErrorOk) {
    a.reportError(asmjit::kErrorOutOfMemory);
    return;
  }
  reloc->_sourceSectionId = a.currentSection()->id();
  reloc->_sourceOffset = start;
  reloc->_format.resetToSimpleValue(asmjit::OffsetType::kSignedOffset, 4);
  reloc->_format.setLeadingAndTrailingSize(opcode.size(), 0);
  reloc->_payload = target;
}

void emit_mov_imm64(x86::Assembler& a, const x86::Gp& reg, std::uint64_t value) {
  a.db(rex_w(reg, false));
  a.db(static_cast<std::uint8_t>(0xB8 + (reg.id() & 7)));
  a.dq(value);
}

// ---- Decoding -----------------------------------------------------------

// What a point holds now, read and decoded.
struct PointState {
  std::vector<std::uint8_t> bytes;  // The point's instruction (for kFarCall: the move alone).
  std::uint64_t value = 0;          // Target, immediate or data address (0: a disabled guard).
};

std::string hex(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string bytes_text(std::span<const std::uint8_t> bytes) {
  std::string out;
  for (std::uint8_t b : bytes) {
    char buf[4];
    std::snprintf(buf, sizeof buf, "%s%02x", out.empty() ? "" : " ", b);
    out += buf;
  }
  return out;
}

std::string_view expected_form(PatchPointKind kind) {
  switch (kind) {
    case PatchPointKind::kCall: return "call rel32 (e8)";
    case PatchPointKind::kFarCall: return "mov r64, imm64 followed by call r64 with the same register";
    case PatchPointKind::kJump: return "jmp rel32 (e9)";
    case PatchPointKind::kGuard: return "jmp rel32 (e9) or the 5-byte nop (0f 1f 44 00 00)";
    case PatchPointKind::kBranch: return "jcc rel32 (0f 80-8f)";
    case PatchPointKind::kImm32: return "mov r32, imm32 (b8+r)";
    case PatchPointKind::kImm64: return "mov r64, imm64 (rex.w b8+r)";
    case PatchPointKind::kRipData: return "lea r64, [rip+disp32] or mov r64, [rip+disp32]";
  }
  return "?";
}

std::int32_t read_i32(const std::uint8_t* p) {
  std::int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// The point of `kind` that `bytes` (read at `address`) hold, matched by its
// encoding alone, or nothing. Each kind has exactly one encoding per
// register, so the bytes decide it; that the point starts on an instruction
// boundary is what the Zydis decode (check) and every change's validation add.
std::optional<PointState> match_point(std::uintptr_t address, std::span<const std::uint8_t> bytes,
                                      PatchPointKind kind) {
  const std::uint8_t* p = bytes.data();
  const std::size_t have = bytes.size();
  PointState out;
  auto take = [&](std::size_t n) -> std::optional<PointState> {
    if (have < n) return std::nullopt;
    out.bytes.assign(p, p + n);
    return std::move(out);
  };
  auto rel_target = [&](std::size_t n) {
    return static_cast<std::uint64_t>(address + n + static_cast<std::int64_t>(read_i32(p + n - 4)));
  };
  if (have == 0) return std::nullopt;
  switch (kind) {
    case PatchPointKind::kCall:
    case PatchPointKind::kJump:
      if (have < 5 || p[0] != (kind == PatchPointKind::kCall ? 0xE8 : 0xE9)) return std::nullopt;
      out.value = rel_target(5);
      return take(5);
    case PatchPointKind::kGuard:
      if (have >= 5 && p[0] == 0xE9) {
        out.value = rel_target(5);
        return take(5);
      }
      if (have < 5 || !std::equal(p, p + 5, kNop5)) return std::nullopt;
      return take(5);
    case PatchPointKind::kBranch:
      if (have < 6 || p[0] != 0x0F || (p[1] & 0xF0) != 0x80) return std::nullopt;
      out.value = rel_target(6);
      return take(6);
    case PatchPointKind::kImm32: {
      const std::size_t n = p[0] == 0x41 ? 6 : 5;  // REX.B for r8d-r15d, nothing else.
      if (have < n || (p[n - 5] & 0xF8) != 0xB8) return std::nullopt;
      out.value = static_cast<std::uint32_t>(read_i32(p + n - 4));
      return take(n);
    }
    case PatchPointKind::kImm64:
    case PatchPointKind::kFarCall: {
      if (have < 10 || (p[0] & 0xFE) != 0x48 || (p[1] & 0xF8) != 0xB8) return std::nullopt;
      std::memcpy(&out.value, p + 2, 8);
      if (kind == PatchPointKind::kFarCall) {
        // The call through the same register must follow: FF /2, mod 11.
        const std::uint8_t reg = static_cast<std::uint8_t>(((p[0] & 1) << 3) | (p[1] & 7));
        const std::uint8_t call[] = {0x41, 0xFF, static_cast<std::uint8_t>(0xD0 | (reg & 7))};
        const std::span<const std::uint8_t> want = reg >= 8 ? std::span(call) : std::span(call).subspan(1);
        if (have < 10 + want.size() || !std::equal(want.begin(), want.end(), p + 10)) return std::nullopt;
      }
      return take(10);
    }
    case PatchPointKind::kRipData:
      if (have < 7 || (p[0] & 0xFB) != 0x48 || (p[1] != 0x8D && p[1] != 0x8B) || (p[2] & 0xC7) != 0x05)
        return std::nullopt;
      out.value = rel_target(7);
      return take(7);
  }
  return std::nullopt;
}

// Decodes the instruction at `address` with Zydis and checks that it is a
// point of `kind`, or says what is there instead.
Result<PointState> decode_point(std::uintptr_t address, std::span<const std::uint8_t> bytes, PatchPointKind kind) {
  const disasm::CodeSpan span{address, bytes};
  auto insn = disasm::decode(span, address);
  if (!insn)
    return fail(ErrorCode::kDecodeFailed, address,
                "not a " + std::string(to_string(kind)) + " patch point: the bytes there (" +
                    bytes_text(bytes.first(std::min<std::size_t>(bytes.size(), 8))) + ") do not decode");
  std::optional<PointState> point = match_point(address, bytes, kind);
  if (point && point->bytes.size() == insn->length) return std::move(*point);
  const bool far_call_without_call =
      kind == PatchPointKind::kFarCall && match_point(address, bytes, PatchPointKind::kImm64);
  return fail(ErrorCode::kBytesMismatch, address,
              "not a " + std::string(to_string(kind)) + " patch point: found `" + disasm::format(span, address) +
                  "` (" + bytes_text(bytes.first(insn->length)) + ")" +
                  (far_call_without_call ? " not followed by `call` through its register" : "") + ", expected " +
                  std::string(expected_form(kind)));
}

// Reads the point at `address` (up to kMaxPointSize bytes, fewer at the end
// of its allocation or mapping) and decodes it with Zydis, or, when `quick`,
// matches its encoding alone (Zydis then only explains a refusal: a change's
// validation decodes the code around every site anyway). Inside a live
// allocation of the global heap the bytes are read directly (its arenas are
// never unmapped, so the read cannot fault); anywhere else through safe_read.
// `cache`: the last allocation found, so points of one function cost one lookup.
Result<PointState> read_point(std::uintptr_t address, PatchPointKind kind, bool quick = false,
                              runtime::CodeRange* cache = nullptr) {
  std::uint8_t buf[kMaxPointSize];
  std::size_t got = 0;
  runtime::CodeRange block;
  if (cache && cache->contains(address)) {
    block = *cache;
  } else if (auto heap = runtime::CodeHeap::global()) {
    if (auto found = (*heap)->allocation_holding(address)) block = *found;
    if (cache) *cache = block;
  }
  if (block.contains(address)) {
    got = std::min<std::size_t>(sizeof buf, block.end - address);
    std::memcpy(buf, reinterpret_cast<const void*>(address), got);
  } else {
    PUNCH_TRY_ASSIGN(got, runtime::safe_read(address, buf));
  }
  const std::span<const std::uint8_t> bytes(buf, got);
  if (quick)
    if (std::optional<PointState> point = match_point(address, bytes, kind)) return std::move(*point);
  return decode_point(address, bytes, kind);
}

// ---- Retired code -------------------------------------------------------

struct RetiredBlock {
  runtime::CodeHeap* heap = nullptr;
  runtime::CodeRange range;
};

struct RetiredCode {
  runtime::ForkSafeMutex mutex{detail::kRetiredCodeRank};
  std::vector<RetiredBlock> blocks;   // Guarded by mutex.
  std::atomic<std::size_t> count{0};  // blocks.size(): a batch's add skips the lock when nothing is retired.

  const RetiredBlock* holding(std::uintptr_t address, std::size_t size) const {
    for (const RetiredBlock& b : blocks)
      if (address < b.range.end && b.range.begin < address + size) return &b;
    return nullptr;
  }
};

RetiredCode& retired() {
  static auto* r = new RetiredCode;  // Never destroyed: changes may run during static destruction.
  return *r;
}
[[maybe_unused]] const bool g_retired_built = (static_cast<void>(retired()), true);  // Before any fork.

// ---- Changes ------------------------------------------------------------

Status wrong_kind(PatchPoint point, std::string_view operation) {
  return fail(ErrorCode::kInvalidArgument, point.address,
              std::string(operation) + " does not apply to a " + std::string(to_string(point.kind)) + " patch point");
}

// The rel32 from the end of an instruction of `length` bytes at `address` to `target`.
Result<std::int32_t> rel32(PatchPoint point, std::size_t length, std::uintptr_t target) {
  const auto delta = static_cast<std::int64_t>(target - (point.address + length));
  if (delta < INT32_MIN || delta > INT32_MAX)
    return fail(ErrorCode::kOutOfRange, point.address,
                std::string(to_string(point.kind)) + " patch point: target " + hex(target) +
                    " is out of rel32 reach (use a far-call point, or place the code with code_window)");
  return static_cast<std::int32_t>(delta);
}

void put_i32(std::vector<std::uint8_t>& bytes, std::size_t at, std::int32_t v) {
  std::memcpy(bytes.data() + at, &v, 4);
}

}  // namespace

std::string_view to_string(PatchPointKind kind) noexcept {
  switch (kind) {
    case PatchPointKind::kCall: return "call";
    case PatchPointKind::kFarCall: return "far-call";
    case PatchPointKind::kJump: return "jump";
    case PatchPointKind::kGuard: return "guard";
    case PatchPointKind::kBranch: return "branch";
    case PatchPointKind::kImm32: return "imm32";
    case PatchPointKind::kImm64: return "imm64";
    case PatchPointKind::kRipData: return "rip-data";
  }
  return "unknown";
}

PatchPointMark emit_call_point(x86::Assembler& a, std::uintptr_t target) {
  PatchPointMark mark = bind_mark(a, PatchPointKind::kCall, target);
  emit_rel32_to(a, {0xE8}, target);
  return mark;
}

PatchPointMark emit_far_call_point(x86::Assembler& a, std::uintptr_t target, x86::Gp scratch) {
  const x86::Gp reg = scratch.r64();
  PatchPointMark mark = bind_mark(a, PatchPointKind::kFarCall, 0);  // No rel32: places no constraint.
  emit_mov_imm64(a, reg, target);
  if (reg.id() >= 8) a.db(0x41);
  a.db(0xFF);
  a.db(static_cast<std::uint8_t>(0xD0 | (reg.id() & 7)));
  return mark;
}

PatchPointMark emit_jump_point(x86::Assembler& a, std::uintptr_t target) {
  PatchPointMark mark = bind_mark(a, PatchPointKind::kJump, target);
  emit_rel32_to(a, {0xE9}, target);
  return mark;
}

PatchPointMark emit_jump_point(x86::Assembler& a, const asmjit::Label& target) {
  PatchPointMark mark = bind_mark(a, PatchPointKind::kJump, 0);
  a.long_().jmp(target);
  return mark;
}

PatchPointMark emit_guard_point(x86::Assembler& a, std::optional<std::uintptr_t> target) {
  PatchPointMark mark = bind_mark(a, PatchPointKind::kGuard, target.value_or(0));
  if (target)
    emit_rel32_to(a, {0xE9}, *target);
  else
    a.embed(kNop5, sizeof kNop5);
  return mark;
}

PatchPointMark emit_guard_point(x86::Assembler& a, const asmjit::Label& target) {
  PatchPointMark mark = bind_mark(a, PatchPointKind::kGuard, 0);
  a.long_().jmp(target);
  return mark;
}

PatchPointMark emit_branch_point(x86::Assembler& a, x86::CondCode cc, std::uintptr_t target) {
  PatchPointMark mark = bind_mark(a, PatchPointKind::kBranch, target);
  emit_rel32_to(a, {0x0F, static_cast<std::uint8_t>(0x80 | (static_cast<std::uint8_t>(cc) & 0x0F))}, target);
  return mark;
}

PatchPointMark emit_branch_point(x86::Assembler& a, x86::CondCode cc, const asmjit::Label& target) {
  PatchPointMark mark = bind_mark(a, PatchPointKind::kBranch, 0);
  a.long_().j(cc, target);
  return mark;
}

PatchPointMark emit_imm32_point(x86::Assembler& a, x86::Gp reg, std::uint32_t value) {
  PatchPointMark mark = bind_mark(a, PatchPointKind::kImm32, 0);
  if (reg.id() >= 8) a.db(0x41);
  a.db(static_cast<std::uint8_t>(0xB8 + (reg.id() & 7)));
  a.dd(value);
  return mark;
}

PatchPointMark emit_imm64_point(x86::Assembler& a, x86::Gp reg, std::uint64_t value) {
  PatchPointMark mark = bind_mark(a, PatchPointKind::kImm64, 0);
  emit_mov_imm64(a, reg.r64(), value);
  return mark;
}

PatchPointMark emit_rip_data_point(x86::Assembler& a, x86::Gp reg, std::uintptr_t data, RipDataForm form) {
  PatchPointMark mark = bind_mark(a, PatchPointKind::kRipData, data);
  const x86::Gp r = reg.r64();
  emit_rel32_to(a,
                {rex_w(r, true), static_cast<std::uint8_t>(form == RipDataForm::kLea ? 0x8D : 0x8B),
                 static_cast<std::uint8_t>(((r.id() & 7) << 3) | 0x05)},
                data);
  return mark;
}

PatchPointMark emit_patchable_entry(x86::Assembler& a) { return emit_guard_point(a, std::nullopt); }

runtime::AddressWindow code_window(std::span<const PatchPointMark> marks) noexcept {
  runtime::AddressWindow window;
  for (const PatchPointMark& m : marks)
    if (m.target != 0) window = window.intersect(runtime::AddressWindow::rel32_reach(m.target));
  return window;
}

Result<PatchPoint> PatchPoint::check(std::uintptr_t address, PatchPointKind kind) {
  PUNCH_TRY(read_point(address, kind));
  return PatchPoint{address, kind};
}

Result<std::uint64_t> PatchPoint::current() const {
  PUNCH_TRY_ASSIGN(PointState state, read_point(address, kind));
  return state.value;
}

Result<std::uintptr_t> label_address(const asmjit::CodeHolder& code, const void* base, const asmjit::Label& label) {
  if (!base) return fail(ErrorCode::kInvalidArgument, "label_address: null base");
  if (!label.isValid() || !code.isLabelValid(label) || !code.isLabelBound(label))
    return fail(ErrorCode::kInvalidArgument, reinterpret_cast<std::uintptr_t>(base),
                "label_address: the label is not bound in this CodeHolder");
  return reinterpret_cast<std::uintptr_t>(base) + code.labelOffsetFromBase(label);
}

Result<PatchPoint> resolve(const PatchPointMark& mark, const asmjit::CodeHolder& code, const void* base) {
  PUNCH_TRY_ASSIGN(const std::uintptr_t address, label_address(code, base, mark.label));
  return PatchPoint::check(address, mark.kind);
}

// ---- PatchPointBatch ----------------------------------------------------

struct PatchPointBatch::State {
  PatchPointOptions options;
  Transaction transaction;
  std::vector<PatchPoint> points;  // For the retired-code check at commit.
  runtime::CodeRange last_block;   // The heap allocation of the point added last.
  bool committed = false;

  explicit State(PatchPointOptions o) : options(o), transaction(o.transaction) {}

  // Reads and checks `point`, checks `expected` against its value, and adds a
  // site replacing its instruction with make(state) (same length).
  template <class Make>
  Status add(PatchPoint point, std::optional<std::uint64_t> expected, Make make) {
    if (committed) return fail(ErrorCode::kInvalidArgument, point.address, "the patch point batch is committed");
    if (retired().count.load(std::memory_order_acquire) != 0) {  // commit() checks again under the lock.
      std::lock_guard guard(retired().mutex);
      if (retired().holding(point.address, 1))
        return fail(ErrorCode::kNotOwned, point.address,
                    std::string(to_string(point.kind)) + " patch point lies in retired code (being freed)");
    }
    PUNCH_TRY_ASSIGN(PointState state, read_point(point.address, point.kind, true, &last_block));
    if (expected && *expected != state.value)
      return fail(ErrorCode::kConflict, point.address,
                  std::string(to_string(point.kind)) + " patch point holds " + hex(state.value) +
                      ", not the expected " + hex(*expected));
    PUNCH_TRY_ASSIGN(std::vector<std::uint8_t> replacement, make(state));
    // Its container: the global heap's allocation that holds it (found by the
    // validation: one read and one decode per function, and neighbouring points
    // share writes), or, for code elsewhere (a private CodeHeap), the point's
    // own instruction, which the JIT emitted to be changed.
    std::optional<disasm::FunctionExtent> extent;
    if (!last_block.contains(point.address))
      extent = disasm::FunctionExtent{point.address, point.address + state.bytes.size(),
                                      disasm::FunctionExtent::Source::kCaller};
    Site site{point.address, std::move(state.bytes), std::move(replacement), extent};
    PUNCH_TRY(transaction.add(std::move(site)));
    points.push_back(point);
    return {};
  }

  // A rel32 instruction of the point's length with the same opcode bytes, aiming at `target`.
  static Result<std::vector<std::uint8_t>> retargeted(PatchPoint point, const PointState& state,
                                                      std::uintptr_t target) {
    std::vector<std::uint8_t> bytes = state.bytes;
    PUNCH_TRY_ASSIGN(const std::int32_t rel, rel32(point, bytes.size(), target));
    put_i32(bytes, bytes.size() - 4, rel);
    return bytes;
  }
};

PatchPointBatch::PatchPointBatch(PatchPointOptions options) : state_(std::make_unique<State>(options)) {}
PatchPointBatch::~PatchPointBatch() = default;
PatchPointBatch::PatchPointBatch(PatchPointBatch&&) noexcept = default;
PatchPointBatch& PatchPointBatch::operator=(PatchPointBatch&&) noexcept = default;

Status PatchPointBatch::set_call_target(PatchPoint point, std::uintptr_t target,
                                        std::optional<std::uintptr_t> expected) {
  if (point.kind == PatchPointKind::kFarCall)
    return state_->add(point, expected, [&](const PointState& s) -> Result<std::vector<std::uint8_t>> {
      std::vector<std::uint8_t> bytes = s.bytes;
      std::memcpy(bytes.data() + 2, &target, 8);
      return bytes;
    });
  if (point.kind != PatchPointKind::kCall) return wrong_kind(point, "set_call_target");
  return state_->add(point, expected, [&](const PointState& s) { return State::retargeted(point, s, target); });
}

Status PatchPointBatch::set_jump_target(PatchPoint point, std::uintptr_t target,
                                        std::optional<std::uintptr_t> expected) {
  if (point.kind == PatchPointKind::kGuard) {
    return state_->add(point, expected, [&](const PointState&) -> Result<std::vector<std::uint8_t>> {
      std::vector<std::uint8_t> bytes{0xE9, 0, 0, 0, 0};
      PUNCH_TRY_ASSIGN(const std::int32_t rel, rel32(point, 5, target));
      put_i32(bytes, 1, rel);
      return bytes;
    });
  }
  if (point.kind != PatchPointKind::kJump && point.kind != PatchPointKind::kBranch)
    return wrong_kind(point, "set_jump_target");
  return state_->add(point, expected, [&](const PointState& s) { return State::retargeted(point, s, target); });
}

Status PatchPointBatch::enable_guard(PatchPoint point, std::uintptr_t target) {
  if (point.kind != PatchPointKind::kGuard) return wrong_kind(point, "enable_guard");
  return set_jump_target(point, target);
}

Status PatchPointBatch::disable_guard(PatchPoint point) {
  if (point.kind != PatchPointKind::kGuard) return wrong_kind(point, "disable_guard");
  return state_->add(point, std::nullopt, [](const PointState&) -> Result<std::vector<std::uint8_t>> {
    return std::vector<std::uint8_t>(kNop5, kNop5 + 5);
  });
}

Status PatchPointBatch::set_imm32(PatchPoint point, std::uint32_t value, std::optional<std::uint32_t> expected) {
  if (point.kind != PatchPointKind::kImm32) return wrong_kind(point, "set_imm32");
  std::optional<std::uint64_t> want;
  if (expected) want = *expected;
  return state_->add(point, want, [&](const PointState& s) -> Result<std::vector<std::uint8_t>> {
    std::vector<std::uint8_t> bytes = s.bytes;
    std::memcpy(bytes.data() + bytes.size() - 4, &value, 4);
    return bytes;
  });
}

Status PatchPointBatch::set_imm64(PatchPoint point, std::uint64_t value, std::optional<std::uint64_t> expected) {
  if (point.kind != PatchPointKind::kImm64) return wrong_kind(point, "set_imm64");
  return state_->add(point, expected, [&](const PointState& s) -> Result<std::vector<std::uint8_t>> {
    std::vector<std::uint8_t> bytes = s.bytes;
    std::memcpy(bytes.data() + 2, &value, 8);
    return bytes;
  });
}

Status PatchPointBatch::set_data_address(PatchPoint point, std::uintptr_t data,
                                         std::optional<std::uintptr_t> expected) {
  if (point.kind != PatchPointKind::kRipData) return wrong_kind(point, "set_data_address");
  return state_->add(point, expected, [&](const PointState& s) { return State::retargeted(point, s, data); });
}

std::size_t PatchPointBatch::size() const noexcept { return state_->points.size(); }

Status PatchPointBatch::commit() {
  if (state_->committed) return fail(ErrorCode::kInvalidArgument, "patch point batch: already committed");
  if (state_->points.empty()) return {};
  // Under the retired-code lock: no point of the batch can be retired between this check and the change.
  std::lock_guard guard(retired().mutex);
  for (const PatchPoint& p : state_->points)
    if (retired().holding(p.address, 1))
      return fail(ErrorCode::kNotOwned, p.address,
                  std::string(to_string(p.kind)) + " patch point lies in retired code (being freed)");
  PUNCH_TRY(state_->transaction.commit());
  state_->committed = true;
  return {};
}

// ---- Single points ------------------------------------------------------

namespace {
template <class Add>
Status one(PatchPointOptions options, Add add) {
  PatchPointBatch batch(options);
  PUNCH_TRY(add(batch));
  return batch.commit();
}
}  // namespace

Status set_call_target(PatchPoint point, std::uintptr_t target, std::optional<std::uintptr_t> expected,
                       PatchPointOptions options) {
  return one(options, [&](PatchPointBatch& b) { return b.set_call_target(point, target, expected); });
}
Status set_jump_target(PatchPoint point, std::uintptr_t target, std::optional<std::uintptr_t> expected,
                       PatchPointOptions options) {
  return one(options, [&](PatchPointBatch& b) { return b.set_jump_target(point, target, expected); });
}
Status enable_guard(PatchPoint point, std::uintptr_t target, PatchPointOptions options) {
  return one(options, [&](PatchPointBatch& b) { return b.enable_guard(point, target); });
}
Status disable_guard(PatchPoint point, PatchPointOptions options) {
  return one(options, [&](PatchPointBatch& b) { return b.disable_guard(point); });
}
Status set_imm32(PatchPoint point, std::uint32_t value, std::optional<std::uint32_t> expected,
                 PatchPointOptions options) {
  return one(options, [&](PatchPointBatch& b) { return b.set_imm32(point, value, expected); });
}
Status set_imm64(PatchPoint point, std::uint64_t value, std::optional<std::uint64_t> expected,
                 PatchPointOptions options) {
  return one(options, [&](PatchPointBatch& b) { return b.set_imm64(point, value, expected); });
}
Status set_data_address(PatchPoint point, std::uintptr_t data, std::optional<std::uintptr_t> expected,
                        PatchPointOptions options) {
  return one(options, [&](PatchPointBatch& b) { return b.set_data_address(point, data, expected); });
}

// ---- Invalidation and retirement ----------------------------------------

Status invalidate_entry(std::uintptr_t function, std::uintptr_t stub, PatchPointOptions options) {
  PUNCH_TRY_ASSIGN(const PatchPoint entry, PatchPoint::check(function, PatchPointKind::kGuard).map_error([](Error e) {
    return e.with_context("invalidate_entry: the function's entry is not a patchable entry (emit_patchable_entry)");
  }));
  PUNCH_TRY_ASSIGN(const std::uint64_t now, entry.current());
  if (now == stub) return {};  // Already sent there.
  if (now != 0)
    return fail(ErrorCode::kConflict, function,
                "invalidate_entry: the function is already invalidated to " + hex(now) + ", not " + hex(stub));
  return one(options, [&](PatchPointBatch& b) { return b.set_jump_target(entry, stub, std::uint64_t{0}); });
}

Status retire_code(runtime::Jit& jit, const void* function) {
  const auto address = reinterpret_cast<std::uintptr_t>(function);
  PUNCH_TRY_ASSIGN(const std::size_t size, jit.heap().allocation_size(address));
  std::lock_guard guard(retired().mutex);
  if (retired().holding(address, size))
    return fail(ErrorCode::kConflict, address, "retire_code: the code is already retired");
  retired().blocks.push_back({&jit.heap(), {address, address + size}});
  retired().count.store(retired().blocks.size(), std::memory_order_release);
  return {};
}

bool is_retired(std::uintptr_t address) {
  std::lock_guard guard(retired().mutex);
  return retired().holding(address, 1) != nullptr;
}

Result<RetiredCodeStats> free_retired_code(std::chrono::milliseconds timeout) {
  std::lock_guard guard(retired().mutex);
  std::vector<RetiredBlock>& blocks = retired().blocks;
  RetiredCodeStats stats;
  if (blocks.empty()) return stats;
  std::vector<runtime::CodeRange> ranges;
  ranges.reserve(blocks.size());
  for (const RetiredBlock& b : blocks) ranges.push_back(b.range);
  PUNCH_TRY_ASSIGN(const std::vector<bool> in_use, runtime::ranges_in_use(ranges, timeout));
  std::vector<RetiredBlock> waiting;
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    if (in_use[i]) {
      waiting.push_back(blocks[i]);
      continue;
    }
    // The heap fills the space with int3, and syncs before handing it out again.
    if (Status freed = blocks[i].heap->free(blocks[i].range.begin); !freed) {
      // Keep what is left retired: nothing was lost, the caller may retry.
      for (std::size_t k = i; k < blocks.size(); ++k) waiting.push_back(blocks[k]);
      blocks = std::move(waiting);
      retired().count.store(blocks.size(), std::memory_order_release);
      return tl::unexpected(std::move(freed).error().with_context("free_retired_code"));
    }
    ++stats.freed;
  }
  blocks = std::move(waiting);
  retired().count.store(blocks.size(), std::memory_order_release);
  stats.waiting = blocks.size();
  return stats;
}

}  // namespace punch::patcher
