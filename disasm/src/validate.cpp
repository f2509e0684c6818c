// Patch validation: instruction boundaries and replacement bytes.
#include <punch/disasm/validate.hpp>

#include <algorithm>

namespace punch::disasm {
namespace {

std::string describe_at(CodeSpan code, const Instruction& insn) {
  return "`" + format(code, insn.address) + "` at " + at(insn.address) + " (" + std::to_string(insn.length) + " bytes)";
}

}  // namespace

Result<std::vector<Instruction>> check_boundaries(CodeSpan code, std::uintptr_t start, std::uintptr_t end) {
  if (code.bytes.empty()) return fail(ErrorCode::kInvalidArgument, start, "no code to check against (empty span)");
  if (start >= end)
    return fail(ErrorCode::kInvalidArgument, start,
                "empty or reversed patch range [" + at(start) + ", " + at(end) + ")");
  if (start < code.address || end > code.end())
    return fail(ErrorCode::kInvalidArgument, start,
                "patch range [" + at(start) + ", " + at(end) + ") is not inside the decoded code [" + at(code.address) +
                    ", " + at(code.end()) + ")");
  std::vector<Instruction> inside;
  inside.reserve(std::min<std::size_t>(end - start, 32));  // Patch ranges are short: usually no regrowth.
  for (std::uintptr_t a = code.address; a < end;) {
    auto insn = decode(code, a);
    if (!insn) return tl::unexpected(std::move(insn).error());
    if (insn->address < start && start < insn->end())
      return fail(ErrorCode::kNotBoundary, start, "patch range starts inside " + describe_at(code, *insn));
    if (insn->address < end && end < insn->end())
      return fail(ErrorCode::kNotBoundary, end,
                  "patch range [" + at(start) + ", " + at(end) + ") ends inside " + describe_at(code, *insn));
    if (insn->address >= start) inside.push_back(*insn);
    a = insn->end();
  }
  return inside;
}

Result<std::vector<Instruction>> check_replacement(CodeSpan replacement) {
  if (replacement.bytes.empty()) return fail(ErrorCode::kInvalidArgument, replacement.address, "empty replacement");
  auto all = decode_all(replacement);
  if (!all)
    return fail(std::move(all).error().with_context("replacement for [" + at(replacement.address) + ", " +
                                                    at(replacement.end()) + ")"));
  return all;
}

}  // namespace punch::disasm
