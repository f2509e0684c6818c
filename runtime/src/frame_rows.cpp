#include "frame_rows.hpp"

#include <string>

namespace punch::runtime::detail {
namespace {

constexpr std::uint8_t kRsp = 4, kRbp = 5;

struct State {
  FrameRow row;            // The CFA rule and saved registers.
  std::int32_t depth = 8;  // CFA - rsp, followed even while the CFA is on rbp.
};

}  // namespace

Result<std::vector<FrameRow>> frame_rows(const FrameDescription& description, std::size_t size) {
  using Op = FrameDescription::Step::Op;
  std::vector<FrameRow> rows{FrameRow{}};
  std::vector<State> remembered;
  State s;
  std::uint32_t last = 0;
  for (std::size_t i = 0; i < description.steps.size(); ++i) {
    const auto& step = description.steps[i];
    auto bad = [&](const std::string& why) {
      return fail(ErrorCode::kInvalidArgument,
                  "frame description step " + std::to_string(i) + " at +" + std::to_string(step.offset) + ": " + why);
    };
    if (step.offset < last) return bad("comes before the step ahead of it");
    if (step.offset > size) return bad("is past the end of the " + std::to_string(size) + "-byte function");
    last = step.offset;
    switch (step.op) {
      case Op::kPush:
      case Op::kPop:
        if (step.reg >= 16 || step.reg == kRsp) return bad("pushes or pops register " + std::to_string(step.reg));
        if (step.op == Op::kPush) {
          s.depth += 8;
          if (s.depth / 8 > 255) return bad("the frame is deeper than 2 KiB of pushes");
          if (s.row.saved[step.reg] == 0) s.row.saved[step.reg] = static_cast<std::uint8_t>(s.depth / 8);
        } else if (step.reg == kRbp && s.row.cfa_on_rbp) {
          // leave / mov rsp, rbp; pop rbp: rsp was rbp, which was CFA - cfa_offset.
          s.depth = s.row.cfa_offset - 8;
          s.row.cfa_on_rbp = false;
          s.row.saved[kRbp] = 0;
        } else {
          // While the CFA follows rbp, rsp was reset from rbp (lea/mov) before the
          // pops: only the CFA rule matters until rbp itself is popped.
          if (!s.row.cfa_on_rbp && s.depth - 8 < 8) return bad("pops the return address");
          s.row.saved[step.reg] = 0;
          s.depth -= 8;
        }
        break;
      case Op::kSetFramePointer:
        s.row.cfa_on_rbp = true;
        s.row.cfa_offset = s.depth;
        break;
      case Op::kAdjustStack:
        if (std::int64_t{s.depth} + step.amount < 8 || std::int64_t{s.depth} + step.amount > (1 << 30))
          return bad("moves rsp to " + std::to_string(std::int64_t{s.depth} + step.amount) +
                     " bytes below the CFA (outside [8, 1 GiB])");
        s.depth += step.amount;
        break;
      case Op::kRemember: remembered.push_back(s); break;
      case Op::kRestore:
        if (remembered.empty()) return bad("restores a frame that was never remembered");
        s = remembered.back();
        remembered.pop_back();
        break;
    }
    if (!s.row.cfa_on_rbp) s.row.cfa_offset = s.depth;
    s.row.offset = step.offset;
    if (rows.back().offset == step.offset)
      rows.back() = s.row;
    else
      rows.push_back(s.row);
  }
  // Drop rows that change nothing.
  std::vector<FrameRow> out;
  for (const FrameRow& r : rows) {
    if (!out.empty()) {
      FrameRow prev = out.back();
      prev.offset = r.offset;
      if (prev == r) continue;
    }
    out.push_back(r);
  }
  return out;
}

}  // namespace punch::runtime::detail
