// Live patch transactions: the cost of a commit (and of a revert) of one site
// and of batches of n sites, against one small pwrite to /proc/self/mem in the
// same run. Two layouts: sites packed in one function over a few pages (a JIT's
// call sites), and every site on its own page. With and without a busy thread.
// Ratio to read: (time per iteration / n sites) / BM_Pwrite/small, and the
// pwrites_per_site counter: the same against a small pwrite measured between
// the timed commits.
//
// The busy thread is pinned to another CPU than the measuring thread and
// counts its calls: `busy_calls` (per iteration) shows it really ran during
// the measurement. BM_Floor/* measure what every live change must pay with
// the same busy thread: one sync (beside the bare membarrier call and each way
// of serializing one thread), one rendezvous, and, for comparison, what
// an mprotect-based hook library pays for an install plus a remove.
#include <benchmark/benchmark.h>

#include <fcntl.h>
#include <pthread.h>

#include "busy_caller.hpp"
#include <linux/membarrier.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <punch/patcher/transaction.hpp>
#include <punch/runtime/code_heap.hpp>
#include <punch/runtime/serialize.hpp>
#include <punch/runtime/sync.hpp>
#include <punch/runtime/threads.hpp>

namespace {

using namespace punch;

constexpr std::size_t kPage = 4096;

std::vector<std::uint8_t> mov_eax(std::uint32_t v) {
  std::vector<std::uint8_t> b{0xB8, 0, 0, 0, 0};
  std::memcpy(b.data() + 1, &v, 4);
  return b;
}

// n `mov eax, i` sites: packed in one function (5 bytes apart, then ret) or one
// function per page (each `mov; ret`, its own heap allocation).
// Frees its code when done, so that later benchmarks (emission among them)
// find the heap as it was, not with thousands of pages still taken.
struct Code {
  std::uintptr_t base = 0;
  std::vector<std::uintptr_t> sites;
  std::vector<std::uintptr_t> blocks;  // What it allocated.

  Code(const Code&) = delete;
  Code& operator=(const Code&) = delete;
  ~Code() {
    auto heap = runtime::CodeHeap::global();
    if (heap && !blocks.empty()) (void)(*heap)->free_batch(blocks);
  }

  Code(std::size_t n, bool own_page) {
    auto heap = runtime::CodeHeap::global();
    if (!heap) return;
    if (own_page) {  // n functions `mov eax, i; ret`, each its own allocation on its own page.
      for (std::size_t i = 0; i < n; ++i) {
        auto block = (*heap)->allocate(6, kPage);
        if (!block) return;
        blocks.push_back(*block);
        auto bytes = mov_eax(static_cast<std::uint32_t>(i));
        bytes.push_back(0xC3);
        if (!(*heap)->writer().write(*block, bytes)) return;
        sites.push_back(*block);
      }
      base = sites.front();
      if (!runtime::sync_all_threads()) sites.clear();
      return;
    }
    auto block = (*heap)->allocate(n * 5 + 1, 16);  // One function: n `mov eax, i` in a row, then ret.
    if (!block) return;
    blocks.push_back(*block);
    base = *block;
    std::vector<std::uint8_t> image;
    for (std::size_t i = 0; i < n; ++i) {
      auto mov = mov_eax(static_cast<std::uint32_t>(i));
      image.insert(image.end(), mov.begin(), mov.end());
      sites.push_back(base + i * 5);
    }
    image.push_back(0xC3);
    if (!(*heap)->writer().write(base, image) || !runtime::sync_all_threads()) sites.clear();
  }
};

// The ratio's reference, a small pwrite (as BM_Pwrite/small), measured inside
// a batch benchmark in its untimed part, between its timed commits: the
// machine's speed drifts over a run (shared, noisy hosts), and a reference
// taken minutes apart in another row moves the ratio by a few percent.
class InterleavedPwrite {
 public:
  InterleavedPwrite() : fd_(::open("/proc/self/mem", O_RDWR | O_CLOEXEC)) {}
  ~InterleavedPwrite() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return fd_ >= 0 && !code_.sites.empty(); }

  // A burst of `count` writes of the 4 bytes already there, after 16 untimed
  // ones: BM_Pwrite/small is a warm loop, and so is this.
  void measure(int count) {
    const auto site = code_.sites[0];
    auto write = [&] { (void)::pwrite(fd_, reinterpret_cast<const void*>(site), 4, static_cast<off_t>(site)); };
    for (int i = 0; i < 16; ++i) write();
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < count; ++i) write();
    nanoseconds_ += std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
    writes_ += static_cast<std::uint64_t>(count);
  }
  double nanoseconds_per_write() const { return writes_ ? nanoseconds_ / static_cast<double>(writes_) : 0; }

 private:
  Code code_{1, true};  // On a page of its own, apart from the code the busy thread runs.
  int fd_;
  double nanoseconds_ = 0;
  std::uint64_t writes_ = 0;
};

// measure: 0 = commit (revert untimed), 1 = revert (commit untimed).
// Counter pwrites_per_site: the measured operation's time per site over the
// interleaved reference pwrite (the ratio, measured like for like).
void run_patch(benchmark::State& state, std::size_t n, bool own_page, bool busy, int measure) {
  Code code(n, own_page);
  InterleavedPwrite reference;
  if (code.sites.size() != n || !reference.ok()) {
    state.SkipWithError("could not emit the code");
    return;
  }
  patcher::Transaction tx;
  for (std::size_t i = 0; i < n; ++i)
    (void)tx.add(patcher::Site{code.sites[i], mov_eax(static_cast<std::uint32_t>(i)),
                               mov_eax(static_cast<std::uint32_t>(i + 1)), std::nullopt});
  punch::bench::BusyCaller thread(
      busy, [fn = code.sites[0]] { benchmark::DoNotOptimize(reinterpret_cast<int (*)()>(fn)()); });
  const std::uint64_t calls_before = thread.calls();
  const int burst = static_cast<int>(std::clamp<std::size_t>(n / 8, 8, 128));  // Small beside the operation.
  double measured_ns = 0;  // The timed operation alone, by our own clock.
  auto timed = [&](Status (patcher::Transaction::*op)()) {
    const auto start = std::chrono::steady_clock::now();
    if (!(tx.*op)()) state.SkipWithError("commit or revert failed");
    measured_ns += std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
  };
  for (auto _ : state) {
    if (measure == 1) {
      state.PauseTiming();
      if (!tx.commit()) state.SkipWithError("commit failed");
      reference.measure(burst);
      state.ResumeTiming();
      timed(&patcher::Transaction::revert);
    } else {
      timed(&patcher::Transaction::commit);
      state.PauseTiming();
      if (!tx.revert()) state.SkipWithError("revert failed");
      reference.measure(burst);
      state.ResumeTiming();
    }
  }
  thread.report(state, calls_before);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
  state.counters["sites"] = static_cast<double>(n);
  if (state.iterations() > 0 && reference.nanoseconds_per_write() > 0)
    state.counters["pwrites_per_site"] =
        measured_ns / static_cast<double>(state.iterations() * n) / reference.nanoseconds_per_write();
  (void)patcher::reclaim_retired_copies();
}

// Validation alone (Transaction::validate: what commit and revert each run
// first), per batch: the part of a commit's cost that is not writes or syncs.
void run_validate(benchmark::State& state, std::size_t n, bool own_page) {
  Code code(n, own_page);
  if (code.sites.size() != n) return state.SkipWithError("could not emit the code");
  patcher::Transaction tx;
  for (std::size_t i = 0; i < n; ++i)
    (void)tx.add(patcher::Site{code.sites[i], mov_eax(static_cast<std::uint32_t>(i)),
                               mov_eax(static_cast<std::uint32_t>(i + 1)), std::nullopt});
  for (auto _ : state)
    if (!tx.validate()) state.SkipWithError("validate failed");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

// The floor of any live change, with the same busy thread: one sync (the
// protocol pays three per batch, the fix-up round standing in for one) ...
void BM_Floor_sync(benchmark::State& state) {
  Code code(1, false);
  punch::bench::BusyCaller thread(state.range(0) > 0,
                                  [fn = code.base] { benchmark::DoNotOptimize(reinterpret_cast<int (*)()>(fn)()); });
  const std::uint64_t before = thread.calls();
  for (auto _ : state)
    if (!runtime::sync_all_threads()) state.SkipWithError("sync failed");
  thread.report(state, before);
}
BENCHMARK(BM_Floor_sync)->Name("BM_Floor/sync")->Arg(0)->Arg(1)->ArgName("busy")->UseRealTime();

// ... of which the kernel's part is the bare membarrier SYNC_CORE system call
// (issue: the sync at most 1.2x this row, idle and busy) ...
void BM_Floor_membarrier_raw(benchmark::State& state) {
  Code code(1, false);
  if (runtime::sync_method() != runtime::SyncMethod::kMembarrier) return state.SkipWithError("membarrier refused here");
  punch::bench::BusyCaller thread(state.range(0) > 0,
                                  [fn = code.base] { benchmark::DoNotOptimize(reinterpret_cast<int (*)()>(fn)()); });
  const std::uint64_t before = thread.calls();
  for (auto _ : state)
    if (::syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE, 0, 0) != 0)
      state.SkipWithError("membarrier failed");
  thread.report(state, before);
}
BENCHMARK(BM_Floor_membarrier_raw)->Name("BM_Floor/membarrier_raw")->Arg(0)->Arg(1)->ArgName("busy")->UseRealTime();

// ... and serializing one thread, with each method (the trap handler, the
// fix-up visitor and a released held thread pay one; cpuid is a VM exit in a VM).
void BM_Floor_serialize(benchmark::State& state, runtime::SerializeMethod method) {
  if (!runtime::testing::force_serialize_method(method)) return state.SkipWithError("not on this CPU");
  if (runtime::serialize_method() != method) state.SkipWithError("not on this thread (shadow stack)");
  for (auto _ : state) runtime::serialize_this_thread();
  (void)runtime::testing::force_serialize_method(std::nullopt);
}
BENCHMARK_CAPTURE(BM_Floor_serialize, serialize, runtime::SerializeMethod::kSerialize)->Name("BM_Floor/serialize/serialize");
BENCHMARK_CAPTURE(BM_Floor_serialize, iret, runtime::SerializeMethod::kIret)->Name("BM_Floor/serialize/iret");
BENCHMARK_CAPTURE(BM_Floor_serialize, cpuid, runtime::SerializeMethod::kCpuid)->Name("BM_Floor/serialize/cpuid");

// ... one rendezvous (the fix-up round, and every reclamation of copies or trampolines) ...
void BM_Floor_rendezvous(benchmark::State& state) {
  Code code(1, false);
  punch::bench::BusyCaller thread(state.range(0) > 0,
                                  [fn = code.base] { benchmark::DoNotOptimize(reinterpret_cast<int (*)()>(fn)()); });
  const std::uint64_t before = thread.calls();
  for (auto _ : state)
    if (!runtime::visit_other_threads([](ucontext_t*, void*) {}, nullptr, std::chrono::milliseconds(1000)))
      state.SkipWithError("rendezvous failed");
  thread.report(state, before);
}
BENCHMARK(BM_Floor_rendezvous)->Name("BM_Floor/rendezvous")->Arg(0)->Arg(1)->ArgName("busy")->UseRealTime();

// ... and what an mprotect-based hook library (funchook, subhook) pays for an
// install plus a remove of a 5-byte entry jump: per change, mprotect the page
// RWX, copy, mprotect it back to RX (two mprotect pairs in all; dropping the
// write permission shoots down the busy thread's TLB). Bench only: punch
// itself never maps W+X. The page is not the busy thread's code: this way is
// not live-safe.
void BM_Floor_mprotect_pairs(benchmark::State& state) {
  Code code(1, false);
  void* page = mmap(nullptr, kPage, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (page == MAP_FAILED) return state.SkipWithError("mmap failed");
  punch::bench::BusyCaller thread(state.range(0) > 0,
                                  [fn = code.base] { benchmark::DoNotOptimize(reinterpret_cast<int (*)()>(fn)()); });
  const std::uint64_t before = thread.calls();
  const std::uint8_t jump[5] = {0xE9, 0, 0, 0, 0}, original[5] = {0x0F, 0x1F, 0x44, 0x00, 0x00};
  for (auto _ : state)
    for (const std::uint8_t* bytes : {jump, original}) {
      if (mprotect(page, kPage, PROT_READ | PROT_WRITE | PROT_EXEC) != 0)
        return state.SkipWithError("mprotect RWX refused (MDWE?)");
      std::memcpy(page, bytes, 5);
      benchmark::ClobberMemory();
      mprotect(page, kPage, PROT_READ | PROT_EXEC);
    }
  thread.report(state, before);
  munmap(page, kPage);
}
BENCHMARK(BM_Floor_mprotect_pairs)->Name("BM_Floor/mprotect_pairs")->Arg(0)->Arg(1)->ArgName("busy")->UseRealTime();

// 4-byte writes of the bytes already there to `code`'s sites in turn (one
// site: the same place again and again), straight to /proc/self/mem or
// through CodeWriter::write.
void run_pwrites(benchmark::State& state, const Code& code, bool through_writer) {
  auto heap = runtime::CodeHeap::global();
  const int fd = ::open("/proc/self/mem", O_RDWR | O_CLOEXEC);
  if (fd < 0 || code.sites.empty() || !heap) return state.SkipWithError("no /proc/self/mem or code");
  runtime::CodeWriter& writer = (*heap)->writer();
  std::size_t next = 0;
  for (auto _ : state) {
    const std::uintptr_t site = code.sites[next];
    next = next + 1 == code.sites.size() ? 0 : next + 1;
    const std::span bytes(reinterpret_cast<const std::uint8_t*>(site), 4);
    const bool written = through_writer ? writer.write(site, bytes).has_value()
                                        : ::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(site)) == 4;
    if (!written) state.SkipWithError("write failed");
  }
  ::close(fd);
}

// The reference: one small pwrite to /proc/self/mem (4 bytes, same value) into R+X code.
void BM_Pwrite_small(benchmark::State& state) { run_pwrites(state, Code(1, false), false); }
BENCHMARK(BM_Pwrite_small)->Name("BM_Pwrite/small")->UseRealTime();

// An extra reference, not the ratio's: the same pwrite over 1,000 pages in
// turn (one per own_page site), as the own_page batches write them.
void BM_Pwrite_cold(benchmark::State& state) { run_pwrites(state, Code(1000, true), false); }
BENCHMARK(BM_Pwrite_cold)->Name("BM_Pwrite/cold")->UseRealTime();

// The same through CodeWriter::write: what the writer adds to each of the protocol's writes.
void BM_Pwrite_cold_writer(benchmark::State& state) { run_pwrites(state, Code(1000, true), true); }
BENCHMARK(BM_Pwrite_cold_writer)->Name("BM_Pwrite/cold/code_writer")->UseRealTime();

void register_all() {
  for (bool own_page : {false, true})
    benchmark::RegisterBenchmark(own_page ? "BM_Validate/batch/1000/own_page" : "BM_Validate/batch/1000/packed",
                                 [=](benchmark::State& s) { run_validate(s, 1000, own_page); })
        ->UseRealTime();
  for (int busy : {0, 1}) {
    const std::string b = "/busy:" + std::to_string(busy);
    benchmark::RegisterBenchmark(("BM_LivePatch/single" + b).c_str(), [=](benchmark::State& s) {
      run_patch(s, 1, false, busy, 0);
    })->UseRealTime();
    for (std::size_t n : {10, 100, 1000, 10000}) {
      for (bool own_page : {false, true}) {
        if (own_page && n > 1000) continue;  // 10,000 functions on 10,000 pages: 40 MiB of arenas.
        const std::string layout = own_page ? "/own_page" : "/packed";
        const std::string suffix = std::to_string(n) + layout + b;
        benchmark::RegisterBenchmark(("BM_LivePatch/batch/" + suffix).c_str(), [=](benchmark::State& s) {
          run_patch(s, n, own_page, busy, 0);
        })->UseRealTime();
        benchmark::RegisterBenchmark(("BM_Revert/batch/" + suffix).c_str(), [=](benchmark::State& s) {
          run_patch(s, n, own_page, busy, 1);
        })->UseRealTime();
      }
    }
  }
}
const int registered = (register_all(), 0);

}  // namespace
