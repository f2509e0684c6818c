// minivm: runs a program of examples/minivm/programs on several threads at
// once, in the interpreter and the JIT, while another thread recompiles and
// invalidates its functions; checks every result against the interpreter's.
//
//   minivm [--program NAME|FILE] [--threads T] [--seconds S] [--require-patches]
//
// Exits 1 when a run's result differs from the interpreter's, or (with
// --require-patches) when an inline cache, call site or deopt path never ran.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "assembler.hpp"
#include "driver.hpp"

namespace {

std::string program_path(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  return std::string(MINIVM_PROGRAMS_DIR) + "/" + name + ".mvm";
}

int usage() {
  std::fprintf(stderr, "usage: minivm [--program NAME|FILE] [--threads T] [--seconds S] [--require-patches]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string name = "properties";
  minivm::DriverOptions options;
  bool require_patches = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--require-patches")) {
      require_patches = true;
      continue;
    }
    if (i + 1 == argc) return usage();
    const char* value = argv[++i];
    if (!std::strcmp(argv[i - 1], "--program")) {
      name = value;
    } else if (!std::strcmp(argv[i - 1], "--threads")) {
      options.threads = std::atoi(value);
    } else if (!std::strcmp(argv[i - 1], "--seconds")) {
      options.seconds = std::atof(value);
    } else {
      return usage();
    }
  }
  if (options.threads < 1 || options.seconds < 0) return usage();

  std::ifstream in(program_path(name));
  if (!in) {
    std::fprintf(stderr, "minivm: cannot read %s\n", program_path(name).c_str());
    return 2;
  }
  std::stringstream text;
  text << in.rdbuf();
  auto program = minivm::assemble(text.str());
  if (!program) {
    std::fprintf(stderr, "minivm: %s: %s\n", program_path(name).c_str(), program.error().describe().c_str());
    return 2;
  }
  auto report = minivm::run_driver(*program, options);
  if (!report) {
    std::fprintf(stderr, "minivm: %s\n", report.error().describe().c_str());
    return 1;
  }
  const minivm::DriverReport& r = *report;
  if (!r.first_error.empty()) std::fprintf(stderr, "minivm: first wrong run: %s\n", r.first_error.c_str());
  std::printf("runs=%llu compiles=%llu guards_tripped=%llu entries_invalidated=%llu versions_freed=%llu\n",
              static_cast<unsigned long long>(r.runs), static_cast<unsigned long long>(r.compiles),
              static_cast<unsigned long long>(r.guards_tripped), static_cast<unsigned long long>(r.entries_invalidated),
              static_cast<unsigned long long>(r.versions_freed));
  std::printf(
      "minivm: program=%s threads=%d result=%s expected=%s ic_patches=%llu call_retargets=%llu deopts=%llu "
      "wrong=%llu\n",
      name.c_str(), options.threads, r.result.c_str(), r.expected.c_str(),
      static_cast<unsigned long long>(r.ic_patches), static_cast<unsigned long long>(r.call_retargets),
      static_cast<unsigned long long>(r.deopts), static_cast<unsigned long long>(r.wrong));
  if (require_patches && (r.ic_patches == 0 || r.call_retargets == 0 || r.deopts == 0)) {
    std::fprintf(stderr, "minivm: a patch path never ran\n");
    return 1;
  }
  return r.wrong == 0 && r.result == r.expected ? 0 : 1;
}
