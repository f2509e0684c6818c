#include "assembler.hpp"

#include <algorithm>
#include <charconv>
#include <map>
#include <optional>
#include <sstream>
#include <string>

#include "value.hpp"

namespace minivm {
namespace {

using punch::ErrorCode;
using punch::fail;

struct OpInfo {
  Op op;
  const char* operands;  // One letter per operand: r register, i integer, n property name,
                         // g global, f function, l label, then '*' for any number of registers.
};

const std::map<std::string_view, OpInfo>& opcodes() {
  static const std::map<std::string_view, OpInfo> table = {
      {"const", {Op::kConst, "ri"}}, {"mov", {Op::kMov, "rr"}},    {"add", {Op::kAdd, "rrr"}},
      {"sub", {Op::kSub, "rrr"}},    {"mul", {Op::kMul, "rrr"}},   {"addi", {Op::kAddi, "rri"}},
      {"lt", {Op::kLt, "rrr"}},      {"eq", {Op::kEq, "rrr"}},     {"new", {Op::kNew, "r"}},
      {"get", {Op::kGet, "rrn"}},    {"set", {Op::kSet, "rnr"}},   {"gget", {Op::kGget, "rg"}},
      {"gset", {Op::kGset, "gr"}},   {"call", {Op::kCall, "rf*"}}, {"jmp", {Op::kJmp, "l"}},
      {"jz", {Op::kJz, "rl"}},       {"jnz", {Op::kJnz, "rl"}},    {"ret", {Op::kRet, "r"}},
  };
  return table;
}

std::vector<std::string> split(const std::string& line) {
  std::string clean = line.substr(0, line.find('#'));
  for (char& ch : clean)
    if (ch == ',') ch = ' ';
  std::istringstream in(clean);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

std::optional<std::int64_t> parse_int(const std::string& word) {
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(word.data(), word.data() + word.size(), v);
  if (ec != std::errc() || end != word.data() + word.size() || v < kMinInt || v > kMaxInt) return std::nullopt;
  return v;
}

constexpr int kMaxRegs = 256;

// Names that are resolved once the whole text is read.
struct Fixup {
  int function, instr;
  std::string name;
  int line;
};

class Assembler {
 public:
  punch::Result<Program> run(std::string_view text);

 private:
  punch::Status statement(const std::vector<std::string>& words, int line);
  punch::Status instruction(const std::vector<std::string>& words, int line);
  punch::Status resolve();
  int name_id(const std::string& name);
  punch::Error error(int line, const std::string& why) const {
    return punch::Error{ErrorCode::kInvalidArgument, "line " + std::to_string(line) + ": " + why};
  }

  Program program_;
  Function* current_ = nullptr;
  std::map<std::string, int> labels_;
  std::vector<Fixup> label_fixups_, call_fixups_;
};

int Assembler::name_id(const std::string& name) {
  for (std::size_t i = 0; i < program_.names.size(); ++i)
    if (program_.names[i] == name) return static_cast<int>(i);
  program_.names.push_back(name);
  return static_cast<int>(program_.names.size() - 1);
}

punch::Status Assembler::instruction(const std::vector<std::string>& words, int line) {
  auto found = opcodes().find(words[0]);
  if (found == opcodes().end()) return tl::unexpected(error(line, "unknown instruction `" + words[0] + "`"));
  const std::string shape = found->second.operands;
  const bool variadic = !shape.empty() && shape.back() == '*';
  const std::size_t fixed = variadic ? shape.size() - 1 : shape.size();
  if (words.size() - 1 < fixed || (!variadic && words.size() - 1 != fixed))
    return tl::unexpected(error(line, "`" + words[0] + "` takes " + std::to_string(fixed) + " operands"));
  Instr in;
  in.op = found->second.op;
  in.line = line;
  std::int32_t* slots[] = {&in.a, &in.b, &in.c};
  const int here = static_cast<int>(current_->code.size());
  const int fn = static_cast<int>(program_.functions.size() - 1);
  for (std::size_t i = 1; i < words.size(); ++i) {
    const std::string& w = words[i];
    const char kind = i - 1 < fixed ? shape[i - 1] : 'r';
    std::int32_t value = 0;
    if (kind == 'r') {
      auto n = w.size() > 1 && w[0] == 'r' ? parse_int(w.substr(1)) : std::nullopt;
      if (!n || *n < 0 || *n >= kMaxRegs) return tl::unexpected(error(line, "`" + w + "` is not a register r0..r255"));
      value = static_cast<std::int32_t>(*n);
      current_->regs = std::max(current_->regs, static_cast<int>(value) + 1);
    } else if (kind == 'i') {
      auto n = parse_int(w);
      if (!n) return tl::unexpected(error(line, "`" + w + "` is not an integer in 63 bits"));
      in.imm = *n;
      continue;
    } else if (kind == 'n') {
      value = name_id(w);
    } else if (kind == 'g') {
      bool known = false;
      for (std::size_t g = 0; g < program_.globals.size(); ++g)
        if (program_.globals[g].name == w) value = static_cast<std::int32_t>(g), known = true;
      if (!known) return tl::unexpected(error(line, "unknown global `" + w + "` (declare it with `global`)"));
    } else if (kind == 'f') {
      call_fixups_.push_back({fn, here, w, line});
    } else if (kind == 'l') {
      label_fixups_.push_back({fn, here, w, line});
      continue;
    }
    if (i - 1 < fixed) {
      *slots[i - 1] = value;
    } else {
      if (in.nargs == kMaxArgs) return tl::unexpected(error(line, "a call takes at most 6 arguments"));
      in.args[in.nargs++] = static_cast<std::uint8_t>(value);
    }
  }
  current_->code.push_back(in);
  return {};
}

punch::Status Assembler::statement(const std::vector<std::string>& words, int line) {
  const std::string& head = words[0];
  if (head == "global") {
    if (current_) return tl::unexpected(error(line, "`global` inside a function"));
    auto v = words.size() == 3 ? parse_int(words[2]) : std::nullopt;
    if (!v) return tl::unexpected(error(line, "expected `global NAME INT`"));
    program_.globals.push_back({words[1], *v});
    return {};
  }
  if (head == "func") {
    if (current_) return tl::unexpected(error(line, "`func` before the previous function's `end`"));
    auto params = words.size() == 3 ? parse_int(words[2]) : std::nullopt;
    if (!params || *params < 0 || *params > kMaxArgs)
      return tl::unexpected(error(line, "expected `func NAME PARAMS` with 0..6 parameters"));
    for (const Function& f : program_.functions)
      if (f.name == words[1]) return tl::unexpected(error(line, "function `" + words[1] + "` defined twice"));
    program_.functions.push_back({words[1], static_cast<int>(*params), std::max(1, static_cast<int>(*params)), {}});
    current_ = &program_.functions.back();
    labels_.clear();
    return {};
  }
  if (!current_) return tl::unexpected(error(line, "`" + head + "` outside a function"));
  if (head == "end") {
    if (words.size() != 1) return tl::unexpected(error(line, "`end` takes nothing"));
    if (current_->code.empty() || (current_->code.back().op != Op::kRet && current_->code.back().op != Op::kJmp))
      return tl::unexpected(error(line, "function `" + current_->name + "` must end with `ret` or `jmp`"));
    const int fn = static_cast<int>(program_.functions.size() - 1);
    for (const Fixup& f : label_fixups_) {
      if (f.function != fn) continue;
      auto label = labels_.find(f.name);
      if (label == labels_.end()) return tl::unexpected(error(f.line, "unknown label `" + f.name + "`"));
      if (label->second >= static_cast<int>(current_->code.size()))
        return tl::unexpected(error(f.line, "label `" + f.name + "` names no instruction"));
      current_->code[f.instr].target = label->second;
    }
    current_ = nullptr;
    return {};
  }
  if (words.size() == 1 && head.size() > 1 && head.back() == ':') {
    if (!labels_.emplace(head.substr(0, head.size() - 1), static_cast<int>(current_->code.size())).second)
      return tl::unexpected(error(line, "label `" + head + "` defined twice"));
    return {};
  }
  return instruction(words, line);
}

punch::Status Assembler::resolve() {
  for (const Fixup& f : call_fixups_) {
    int index = -1;
    for (std::size_t i = 0; i < program_.functions.size(); ++i)
      if (program_.functions[i].name == f.name) index = static_cast<int>(i);
    if (index < 0) return tl::unexpected(error(f.line, "unknown function `" + f.name + "`"));
    Instr& in = program_.functions[f.function].code[f.instr];
    if (in.nargs != program_.functions[index].params)
      return tl::unexpected(error(f.line, "`" + f.name + "` takes " + std::to_string(program_.functions[index].params) +
                                              " arguments, not " + std::to_string(in.nargs)));
    in.b = index;
  }
  for (std::size_t i = 0; i < program_.functions.size(); ++i) {
    const Function& f = program_.functions[i];
    program_.max_regs = std::max(program_.max_regs, f.regs);
    if (f.name == "main") {
      if (f.params != 0) return tl::unexpected(error(0, "`main` must take no parameters"));
      program_.main = static_cast<int>(i);
    }
  }
  if (program_.main < 0) return tl::unexpected(error(0, "no function `main`"));
  return {};
}

punch::Result<Program> Assembler::run(std::string_view text) {
  std::istringstream in{std::string(text)};
  int line = 0;
  for (std::string raw; std::getline(in, raw);) {
    ++line;
    auto words = split(raw);
    if (words.empty()) continue;
    if (auto ok = statement(words, line); !ok) return tl::unexpected(std::move(ok).error());
  }
  if (current_) return tl::unexpected(error(line, "function `" + current_->name + "` has no `end`"));
  if (auto ok = resolve(); !ok) return tl::unexpected(std::move(ok).error());
  return std::move(program_);
}

}  // namespace

punch::Result<Program> assemble(std::string_view text) { return Assembler().run(text); }

}  // namespace minivm
