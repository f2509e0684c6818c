// Patch points: placeholder bodies (the API is stable; the implementation follows).
#include <punch/patcher/patch_point.hpp>

namespace punch::patcher {
namespace {
Status not_yet() { return fail(ErrorCode::kUnsupported, "patch points: not implemented yet"); }
PatchPointMark bind_mark(asmjit::x86::Assembler& a, PatchPointKind kind, std::uintptr_t target) {
  PatchPointMark mark{a.newLabel(), kind, target};
  a.bind(mark.label);
  return mark;
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

PatchPointMark emit_call_point(asmjit::x86::Assembler& a, std::uintptr_t t) { return bind_mark(a, PatchPointKind::kCall, t); }
PatchPointMark emit_far_call_point(asmjit::x86::Assembler& a, std::uintptr_t t, asmjit::x86::Gp) { return bind_mark(a, PatchPointKind::kFarCall, t); }
PatchPointMark emit_jump_point(asmjit::x86::Assembler& a, std::uintptr_t t) { return bind_mark(a, PatchPointKind::kJump, t); }
PatchPointMark emit_jump_point(asmjit::x86::Assembler& a, const asmjit::Label&) { return bind_mark(a, PatchPointKind::kJump, 0); }
PatchPointMark emit_guard_point(asmjit::x86::Assembler& a, std::optional<std::uintptr_t> t) { return bind_mark(a, PatchPointKind::kGuard, t.value_or(0)); }
PatchPointMark emit_guard_point(asmjit::x86::Assembler& a, const asmjit::Label&) { return bind_mark(a, PatchPointKind::kGuard, 0); }
PatchPointMark emit_branch_point(asmjit::x86::Assembler& a, asmjit::x86::CondCode, std::uintptr_t t) { return bind_mark(a, PatchPointKind::kBranch, t); }
PatchPointMark emit_branch_point(asmjit::x86::Assembler& a, asmjit::x86::CondCode, const asmjit::Label&) { return bind_mark(a, PatchPointKind::kBranch, 0); }
PatchPointMark emit_imm32_point(asmjit::x86::Assembler& a, asmjit::x86::Gp, std::uint32_t) { return bind_mark(a, PatchPointKind::kImm32, 0); }
PatchPointMark emit_imm64_point(asmjit::x86::Assembler& a, asmjit::x86::Gp, std::uint64_t) { return bind_mark(a, PatchPointKind::kImm64, 0); }
PatchPointMark emit_rip_data_point(asmjit::x86::Assembler& a, asmjit::x86::Gp, std::uintptr_t t, RipDataForm) { return bind_mark(a, PatchPointKind::kRipData, t); }
PatchPointMark emit_patchable_entry(asmjit::x86::Assembler& a) { return bind_mark(a, PatchPointKind::kGuard, 0); }
runtime::AddressWindow code_window(std::span<const PatchPointMark>) noexcept { return {}; }
Result<PatchPoint> PatchPoint::check(std::uintptr_t, PatchPointKind) { return tl::unexpected(not_yet().error()); }
Result<std::uint64_t> PatchPoint::current() const { return tl::unexpected(not_yet().error()); }
Result<PatchPoint> resolve(const PatchPointMark&, const asmjit::CodeHolder&, const void*) { return tl::unexpected(not_yet().error()); }
Result<std::uintptr_t> label_address(const asmjit::CodeHolder&, const void*, const asmjit::Label&) { return tl::unexpected(not_yet().error()); }

struct PatchPointBatch::State {};
PatchPointBatch::PatchPointBatch(PatchPointOptions) : state_(std::make_unique<State>()) {}
PatchPointBatch::~PatchPointBatch() = default;
PatchPointBatch::PatchPointBatch(PatchPointBatch&&) noexcept = default;
PatchPointBatch& PatchPointBatch::operator=(PatchPointBatch&&) noexcept = default;
Status PatchPointBatch::set_call_target(PatchPoint, std::uintptr_t, std::optional<std::uintptr_t>) { return not_yet(); }
Status PatchPointBatch::set_jump_target(PatchPoint, std::uintptr_t, std::optional<std::uintptr_t>) { return not_yet(); }
Status PatchPointBatch::enable_guard(PatchPoint, std::uintptr_t) { return not_yet(); }
Status PatchPointBatch::disable_guard(PatchPoint) { return not_yet(); }
Status PatchPointBatch::set_imm32(PatchPoint, std::uint32_t, std::optional<std::uint32_t>) { return not_yet(); }
Status PatchPointBatch::set_imm64(PatchPoint, std::uint64_t, std::optional<std::uint64_t>) { return not_yet(); }
Status PatchPointBatch::set_data_address(PatchPoint, std::uintptr_t, std::optional<std::uintptr_t>) { return not_yet(); }
std::size_t PatchPointBatch::size() const noexcept { return 0; }
Status PatchPointBatch::commit() { return not_yet(); }

Status set_call_target(PatchPoint, std::uintptr_t, std::optional<std::uintptr_t>, PatchPointOptions) { return not_yet(); }
Status set_jump_target(PatchPoint, std::uintptr_t, std::optional<std::uintptr_t>, PatchPointOptions) { return not_yet(); }
Status enable_guard(PatchPoint, std::uintptr_t, PatchPointOptions) { return not_yet(); }
Status disable_guard(PatchPoint, PatchPointOptions) { return not_yet(); }
Status set_imm32(PatchPoint, std::uint32_t, std::optional<std::uint32_t>, PatchPointOptions) { return not_yet(); }
Status set_imm64(PatchPoint, std::uint64_t, std::optional<std::uint64_t>, PatchPointOptions) { return not_yet(); }
Status set_data_address(PatchPoint, std::uintptr_t, std::optional<std::uintptr_t>, PatchPointOptions) { return not_yet(); }
Status invalidate_entry(std::uintptr_t, std::uintptr_t, PatchPointOptions) { return not_yet(); }
Status retire_code(runtime::Jit&, const void*) { return not_yet(); }
bool is_retired(std::uintptr_t) { return false; }
Result<RetiredCodeStats> free_retired_code(std::chrono::milliseconds) { return tl::unexpected(not_yet().error()); }

}  // namespace punch::patcher
