// jit_debug: JIT code that debuggers and profilers can name.
//
// Emits two functions with asmjit's FuncFrame prolog/epilog (frame pointer
// kept, so stack walkers get through them):
//   jit_hot_loop(keep_going)  spins, calling back into C++ now and then, for --seconds S;
//   jit_calls_back(x)         returns jit_debug_callee(x) + 1.
// Run it under perf with the perf map or jitdump on (see README, "Debugging
// and profiling JIT code"):
//   perf record -e cpu-clock -o perf.data -- env PUNCH_PERF_MAP=1 ./jit_debug --seconds 2
//   perf report -i perf.data --stdio          # samples in jit_hot_loop
// Both carry a FrameDescription, so gdb (PUNCH_GDB=1), C++ exceptions and
// runtime::walk_stack unwind through them; the program prints a backtrace
// taken inside jit_debug_callee and catches an exception it throws there:
//   PUNCH_GDB=1 gdb -ex 'break jit_debug_callee' -ex run -ex bt ./jit_debug
// Options: --seconds S (default 1), --perf-map and --jitdump (turn them on
// through the API), --release (release the functions before exiting and show
// that the registry forgot them).
#include <asmjit/x86.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <optional>
#include <string>

#include <punch/runtime/code_registry.hpp>
#include <punch/runtime/function_bounds.hpp>
#include <punch/runtime/jit.hpp>
#include <punch/runtime/jitdump.hpp>
#include <punch/runtime/perf_map.hpp>
#include <punch/runtime/stack_walk.hpp>

using namespace asmjit;
using namespace punch::runtime;

using KeepGoing = long (*)();
using HotLoop = long (*)(KeepGoing);
using CallsBack = long (*)(long);

// What jit_debug_callee does besides doubling: record the stack, or throw.
enum class CalleeMode { kPlain, kBacktrace, kThrow };
static CalleeMode g_callee_mode = CalleeMode::kPlain;
static std::uintptr_t g_backtrace[32];
static std::size_t g_backtrace_depth = 0;

// Called by jit_calls_back; not static and not inlined, so debuggers find it by name.
extern "C" __attribute__((noinline)) long jit_debug_callee(long x) {
  asm volatile("" ::: "memory");
  if (g_callee_mode == CalleeMode::kBacktrace) g_backtrace_depth = walk_stack(g_backtrace);
  if (g_callee_mode == CalleeMode::kThrow) throw std::runtime_error("thrown in jit_debug_callee");
  return x * 2;
}

namespace {

struct Options {
  double seconds = 1.0;
  bool perf_map = false;
  bool jitdump = false;
  bool release = false;
};

bool parse(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--seconds") && i + 1 < argc) {
      o.seconds = std::atof(argv[++i]);
    } else if (!std::strcmp(argv[i], "--perf-map")) {
      o.perf_map = true;
    } else if (!std::strcmp(argv[i], "--jitdump")) {
      o.jitdump = true;
    } else if (!std::strcmp(argv[i], "--release")) {
      o.release = true;
    } else {
      std::fprintf(stderr, "usage: %s [--seconds S] [--perf-map] [--jitdump] [--release]\n", argv[0]);
      return false;
    }
  }
  return true;
}

// A prolog and epilog from asmjit's FuncFrame: push rbp; mov rbp, rsp; the
// callee-saved registers used; a stack aligned for the calls it makes.
// `prolog`/`epilog` record where they were emitted, for describe().
struct Frame {
  FuncDetail detail;
  FuncFrame frame;
  std::uint32_t prolog = 0;
  std::uint32_t epilog = 0;

  void emit_prolog(x86::Assembler& a) {
    prolog = static_cast<std::uint32_t>(a.offset());
    a.emitProlog(frame);
  }
  void emit_epilog(x86::Assembler& a) {
    epilog = static_cast<std::uint32_t>(a.offset());
    a.emitEpilog(frame);
  }
  // The frame for unwinders (exceptions, gdb, walk_stack), read from asmjit's own prolog/epilog.
  std::optional<FrameDescription> describe() const {
    auto d = FrameDescription::from_func_frame(frame, prolog, std::span(&epilog, 1));
    if (!d) return std::nullopt;
    return std::move(*d);
  }
};

template <class Signature, class... Regs>
Frame make_frame(const Environment& env, Regs... dirty) {
  Frame f;
  f.detail.init(FuncSignatureT<Signature>(CallConvId::kHost), env);
  f.frame.init(f.detail);
  f.frame.setPreservedFP();
  f.frame.setFuncCalls();
  (f.frame.addDirtyRegs(dirty), ...);
  f.frame.finalize();
  return f;
}

// long jit_hot_loop(long (*keep_going)()): rounds of a busy inner loop, each
// followed by a call back into C++; returns the number of rounds.
std::optional<FrameDescription> emit_hot_loop(CodeHolder& code) {
  code.init(Jit::environment());
  x86::Assembler a(&code);
  Frame f = make_frame<long(KeepGoing)>(code.environment(), x86::rbx, x86::r12);
  Label round = a.newLabel(), spin = a.newLabel();
  f.emit_prolog(a);
  a.mov(x86::rbx, x86::rdi);  // keep_going
  a.xor_(x86::r12d, x86::r12d);
  a.bind(round);
  a.mov(x86::ecx, 2000000);
  a.mov(x86::eax, 1);
  a.bind(spin);  // Where the samples land.
  a.imul(x86::eax, x86::eax, 3);
  a.dec(x86::ecx);
  a.jnz(spin);
  a.inc(x86::r12);
  a.call(x86::rbx);
  a.test(x86::rax, x86::rax);
  a.jnz(round);
  a.mov(x86::rax, x86::r12);
  f.emit_epilog(a);
  return f.describe();
}

// long jit_calls_back(long x) { return jit_debug_callee(x) + 1; }
std::optional<FrameDescription> emit_calls_back(CodeHolder& code) {
  code.init(Jit::environment());
  x86::Assembler a(&code);
  Frame f = make_frame<long(long)>(code.environment());
  f.emit_prolog(a);
  a.mov(x86::rax, imm(reinterpret_cast<std::uint64_t>(&jit_debug_callee)));
  a.call(x86::rax);
  a.add(x86::rax, 1);
  f.emit_epilog(a);
  return f.describe();
}

// A name for a return address: JIT code from the code registry, the rest from
// symbols or unwind tables (function_containing reads .symtab from the file,
// so `main` is found without -rdynamic).
std::string symbolize(std::uintptr_t return_address) {
  const std::uintptr_t pc = return_address - 1;  // Inside the call, not after it.
  if (CodeInfo info; find_code(pc, info)) return info.name;
  if (auto f = function_containing(pc); f && !f->name.empty()) return f->name;
  char hex[24];
  std::snprintf(hex, sizeof hex, "0x%lx", static_cast<unsigned long>(return_address));
  return hex;
}

std::chrono::steady_clock::time_point g_deadline;

long keep_going() { return std::chrono::steady_clock::now() < g_deadline ? 1 : 0; }

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (!parse(argc, argv, options)) return 2;
  if (options.perf_map)
    if (auto s = enable_perf_map(); !s) return std::fprintf(stderr, "jit_debug: %s\n", s.error().describe().c_str()), 1;
  if (options.jitdump)
    if (auto s = enable_jitdump(); !s) return std::fprintf(stderr, "jit_debug: %s\n", s.error().describe().c_str()), 1;

  auto heap = CodeHeap::global();
  if (!heap) return std::fprintf(stderr, "jit_debug: %s\n", heap.error().describe().c_str()), 1;
  Jit jit(**heap);

  // Both functions in one batch, each under its name.
  CodeHolder hot_code, calls_code;
  const JitFunctionInfo infos[] = {{"jit_hot_loop", emit_hot_loop(hot_code)},
                                   {"jit_calls_back", emit_calls_back(calls_code)}};
  CodeHolder* codes[] = {&hot_code, &calls_code};
  auto added = jit.add_batch(codes, infos);
  if (!added) return std::fprintf(stderr, "jit_debug: %s\n", added.error().describe().c_str()), 1;
  auto hot_loop = reinterpret_cast<HotLoop>((*added)[0]);
  auto calls_back = reinterpret_cast<CallsBack>((*added)[1]);
  std::printf("jit_debug: jit_hot_loop at %p, jit_calls_back at %p\n", (*added)[0], (*added)[1]);

  g_deadline = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                      std::chrono::duration<double>(options.seconds));
  std::printf("jit_debug: jit_hot_loop ran %ld rounds\n", hot_loop(keep_going));
  std::printf("jit_debug: jit_calls_back(20) = %ld\n", calls_back(20));

  // A backtrace taken inside jit_debug_callee, through the JIT frame, up to main.
  g_callee_mode = CalleeMode::kBacktrace;
  calls_back(1);
  std::string trace;
  for (std::size_t i = 0; i < g_backtrace_depth; ++i) {
    const std::string name = symbolize(g_backtrace[i]);
    trace += (i ? " <- " : "") + name;
    if (name == "main") break;  // Below main: libc's start-up, without frame pointers.
  }
  // A C++ exception thrown in jit_debug_callee, caught here above the JIT frame.
  g_callee_mode = CalleeMode::kThrow;
  bool caught = false;
  try {
    calls_back(2);
  } catch (const std::runtime_error&) {
    caught = true;
  }
  g_callee_mode = CalleeMode::kPlain;

  if (options.release) {
    const auto hot = reinterpret_cast<std::uintptr_t>((*added)[0]);
    if (auto s = jit.release_batch(*added); !s)
      return std::fprintf(stderr, "jit_debug: %s\n", s.error().describe().c_str()), 1;
    CodeInfo info;
    std::printf("jit_debug: released: registry %s jit_hot_loop\n", find_code(hot, info) ? "still names" : "forgot");
  }

  // Last: the backtrace, the exception, and the files perf reads.
  std::printf("jit_debug: backtrace: %s\n", trace.c_str());
  std::printf("jit_debug: exception through jit frame: %s\n", caught ? "caught" : "not caught");
  if (std::string path = jitdump_path(); !path.empty())
    std::printf("jit_debug: jitdump: %s (%zu loads)\n", path.c_str(), jitdump_loads());
  if (std::string path = perf_map_path(); !path.empty())
    std::printf("jit_debug: perf map: %s (%zu entries)\n", path.c_str(), perf_map_entries());
  return 0;
}
