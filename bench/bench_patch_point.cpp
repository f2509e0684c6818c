// What a patch point change costs, and how that depends on the thread count.
//
// BM_PatchPoint/<kind>/threads:<n>: one change of one point of that kind
// (set_call_target, set_imm32, ...: the single-point functions, each a
// transaction of one site), back and forth between two values, while n
// threads sleep on a condition variable (as bench_threads.cpp makes them).
// The target: the threads:1000 row at most 2x the threads:0 row.
//
// BM_PatchPoint/batch/<n>: one PatchPointBatch changing n `mov r32, imm32`
// points packed in one function (a JIT's inline caches): time per point
// (counter ns_per_point) against BM_Pwrite/small of the same run
// (bench_patch.cpp), and the `pwrite_ns` counter, a small pwrite measured
// between the timed commits. BM_PatchPoint/batch/1000/cold: the same over 9
// functions in turn, so that no commit finds its function's decode kept.
#include <benchmark/benchmark.h>

#include <fcntl.h>
#include <unistd.h>

#include <asmjit/x86.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <punch/patcher/patch_point.hpp>
#include <punch/runtime/code_heap.hpp>
#include <punch/runtime/jit.hpp>

namespace {

using namespace punch;
using namespace punch::patcher;
namespace x86 = asmjit::x86;

// n threads asleep on a condition variable until destroyed.
class Sleepers {
 public:
  explicit Sleepers(int n) {
    for (int i = 0; i < n; ++i)
      threads_.emplace_back([this] {
        std::unique_lock lock(m_);
        cv_.wait(lock, [this] { return stop_; });
      });
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + n / 10));  // All asleep.
  }
  ~Sleepers() {
    {
      std::lock_guard lock(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// Adds `body`'s code within reach of its marks' targets; returns its points (empty on error).
std::vector<PatchPoint> emit(const std::function<std::vector<PatchPointMark>(x86::Assembler&)>& body,
                             std::uintptr_t* address = nullptr) {
  auto heap = runtime::CodeHeap::global();
  if (!heap) return {};
  runtime::Jit jit(**heap);
  asmjit::CodeHolder code;
  code.init(runtime::Jit::environment());
  x86::Assembler a(&code);
  const std::vector<PatchPointMark> marks = body(a);
  auto fn = jit.add(code, {}, code_window(marks));
  if (!fn) return {};
  if (address) *address = reinterpret_cast<std::uintptr_t>(*fn);
  std::vector<PatchPoint> points;
  for (const PatchPointMark& m : marks) {
    auto p = resolve(m, code, *fn);
    if (!p) return {};
    points.push_back(*p);
  }
  return points;
}

std::uintptr_t returning(int value) {
  std::uintptr_t at = 0;
  (void)emit(
      [&](x86::Assembler& a) {
        a.mov(x86::eax, value);
        a.ret();
        return std::vector<PatchPointMark>{};
      },
      &at);
  return at;
}

std::uint64_t g_data[2];

// One point of `kind` in a small function, and its two values to switch between.
struct Subject {
  PatchPoint point;
  std::uint64_t values[2] = {};
  bool ok = false;
};

Subject make_subject(PatchPointKind kind) {
  Subject s;
  const std::uintptr_t t0 = returning(0), t1 = returning(1);
  std::uintptr_t d0 = reinterpret_cast<std::uintptr_t>(&g_data[0]), d1 = reinterpret_cast<std::uintptr_t>(&g_data[1]);
  if (kind == PatchPointKind::kRipData) d0 = t0, d1 = t1;  // Data near the code (the heap), as a VM's constant pool.
  std::vector<PatchPoint> points = emit([&](x86::Assembler& a) {
    PatchPointMark m;
    switch (kind) {
      case PatchPointKind::kCall: m = emit_call_point(a, t0); break;
      case PatchPointKind::kFarCall: m = emit_far_call_point(a, t0); break;
      case PatchPointKind::kJump: m = emit_jump_point(a, t0); break;
      case PatchPointKind::kGuard: m = emit_guard_point(a); break;
      case PatchPointKind::kBranch: m = emit_branch_point(a, x86::CondCode::kZero, t0); break;
      case PatchPointKind::kImm32: m = emit_imm32_point(a, x86::eax, 0); break;
      case PatchPointKind::kImm64: m = emit_imm64_point(a, x86::rax, 0); break;
      case PatchPointKind::kRipData: m = emit_rip_data_point(a, x86::rax, d0); break;
    }
    a.ret();
    return std::vector<PatchPointMark>{m};
  });
  if (points.size() != 1) return s;
  s.point = points[0];
  switch (kind) {
    case PatchPointKind::kImm32:
    case PatchPointKind::kImm64: s.values[0] = 0, s.values[1] = 1; break;
    case PatchPointKind::kGuard: s.values[0] = 0, s.values[1] = t1; break;
    case PatchPointKind::kRipData: s.values[0] = d0, s.values[1] = d1; break;
    default: s.values[0] = t0, s.values[1] = t1; break;
  }
  s.ok = true;
  return s;
}

Status change(const Subject& s, std::uint64_t to) {
  switch (s.point.kind) {
    case PatchPointKind::kCall:
    case PatchPointKind::kFarCall: return set_call_target(s.point, to);
    case PatchPointKind::kJump:
    case PatchPointKind::kBranch: return set_jump_target(s.point, to);
    case PatchPointKind::kGuard: return to ? enable_guard(s.point, to) : disable_guard(s.point);
    case PatchPointKind::kImm32: return set_imm32(s.point, static_cast<std::uint32_t>(to));
    case PatchPointKind::kImm64: return set_imm64(s.point, to);
    case PatchPointKind::kRipData: return set_data_address(s.point, to);
  }
  return {};
}

void BM_PatchPoint(benchmark::State& state, PatchPointKind kind, int threads) {
  const Subject s = make_subject(kind);
  if (!s.ok) return state.SkipWithError("emitting the point failed");
  Sleepers sleepers(threads);
  const LiveStats before = live_stats();
  int k = 0;
  for (auto _ : state) {
    k ^= 1;
    if (Status done = change(s, s.values[k]); !done) return state.SkipWithError(done.error().describe().c_str());
  }
  const LiveStats after = live_stats();
  state.counters["fixup_rounds"] = static_cast<double>(after.fixup_rounds - before.fixup_rounds);
  state.counters["reclaim_rounds"] = benchmark::Counter(
      static_cast<double>(after.reclaim_rounds - before.reclaim_rounds), benchmark::Counter::kAvgIterations);
}

// A small pwrite measured between timed batches (the ratio's reference, as in bench_patch.cpp).
class InterleavedPwrite {
 public:
  InterleavedPwrite() : fd_(::open("/proc/self/mem", O_RDWR | O_CLOEXEC)), site_(returning(9)) {}
  ~InterleavedPwrite() {
    if (fd_ >= 0) ::close(fd_);
  }
  void measure(int count) {
    auto write = [&] { (void)::pwrite(fd_, reinterpret_cast<const void*>(site_), 4, static_cast<off_t>(site_)); };
    for (int i = 0; i < 16; ++i) write();
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < count; ++i) write();
    ns_ += std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
    writes_ += static_cast<std::uint64_t>(count);
  }
  double ns_per_write() const { return writes_ ? ns_ / static_cast<double>(writes_) : 0; }

 private:
  int fd_;
  std::uintptr_t site_;
  double ns_ = 0;
  std::uint64_t writes_ = 0;
};

// `functions` copies of the function, changed in turn: with more than the
// container memo keeps (8, patcher/src/container_memo.hpp), every commit
// decodes its function afresh (the first change of a function, or one
// changed by other means since).
void BM_PatchPointBatch(benchmark::State& state, int n, int functions) {
  std::vector<std::vector<PatchPoint>> copies;
  for (int f = 0; f < functions; ++f) {
    copies.push_back(emit([&](x86::Assembler& a) {
      std::vector<PatchPointMark> marks;
      a.xor_(x86::eax, x86::eax);
      for (int i = 0; i < n; ++i) {
        marks.push_back(emit_imm32_point(a, x86::ecx, 0));
        a.add(x86::eax, x86::ecx);
      }
      a.ret();
      return marks;
    }));
    if (copies.back().size() != static_cast<std::size_t>(n)) return state.SkipWithError("emitting the points failed");
  }
  InterleavedPwrite reference;
  std::uint32_t value = 0;
  std::size_t next = 0;
  for (auto _ : state) {
    ++value;
    const std::vector<PatchPoint>& points = copies[next];
    next = (next + 1) % copies.size();
    PatchPointBatch batch;
    for (const PatchPoint& p : points)
      if (Status added = batch.set_imm32(p, value); !added)
        return state.SkipWithError(added.error().describe().c_str());
    if (Status done = batch.commit(); !done) return state.SkipWithError(done.error().describe().c_str());
    state.PauseTiming();
    reference.measure(16);
    state.ResumeTiming();
  }
  state.counters["ns_per_point"] = benchmark::Counter(
      static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.counters["pwrite_ns"] = reference.ns_per_write();
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * n);
}

void register_all() {
  const std::pair<PatchPointKind, const char*> kinds[] = {
      {PatchPointKind::kCall, "call"},   {PatchPointKind::kFarCall, "far_call"}, {PatchPointKind::kJump, "jump"},
      {PatchPointKind::kGuard, "guard"}, {PatchPointKind::kBranch, "branch"},    {PatchPointKind::kImm32, "imm32"},
      {PatchPointKind::kImm64, "imm64"}, {PatchPointKind::kRipData, "rip_data"},
  };
  for (const auto& [kind, name] : kinds)
    for (int threads : {0, 1000})
      benchmark::RegisterBenchmark(
          ("BM_PatchPoint/" + std::string(name) + "/threads:" + std::to_string(threads)).c_str(),
          [kind = kind, threads](benchmark::State& s) { BM_PatchPoint(s, kind, threads); })
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
  for (int n : {10, 100, 1000, 10000})
    benchmark::RegisterBenchmark(("BM_PatchPoint/batch/" + std::to_string(n)).c_str(),
                                 [n](benchmark::State& s) { BM_PatchPointBatch(s, n, 1); })
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("BM_PatchPoint/batch/1000/cold",
                               [](benchmark::State& s) { BM_PatchPointBatch(s, 1000, 9); })
      ->UseRealTime()
      ->Unit(benchmark::kMicrosecond);
}

const bool g_registered = (register_all(), true);

}  // namespace
