// punch soak: everything at once, for a while, with memory watched.
//
// Worker threads call, without pause, (a) a JIT-emitted entry stub whose
// `jmp rel32` the main thread keeps retargeting with live transactions, and
// (b) a compiled function the main thread keeps hooking and unhooking. The
// main thread also emits and releases JIT functions at random. Every result is
// checked. At each interval the program prints operations per second, resident
// memory and code-heap statistics; at the end it fails (exit 1) on any wrong
// result, any failed operation, or memory that kept growing after warm-up.
//
//   soak [--seconds N] [--threads N] [--interval N] [--seed N]
//
// CI runs a short mode (a few seconds); the README records a 10-minute run.
#include <asmjit/x86.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <punch/disasm/validate.hpp>
#include <punch/patcher/hook.hpp>
#include <punch/patcher/transaction.hpp>
#include <punch/runtime/code_heap.hpp>
#include <punch/runtime/function_bounds.hpp>
#include <punch/runtime/jit.hpp>
#include <punch/runtime/threads.hpp>

using namespace punch;
using Clock = std::chrono::steady_clock;

// The hook target: a real compiled function with a multi-instruction prologue.
extern "C" __attribute__((noinline)) std::uint64_t soak_target(std::uint64_t x) {
  std::uint64_t acc = x;
  for (int i = 0; i < 3; ++i) acc = acc * 3 + static_cast<std::uint64_t>(i);
  asm volatile("" : "+r"(acc));
  return acc;
}

namespace {

// Every JIT implementation returns x + kStep * k for some k >= 1, so a caller
// can tell a right answer (any implementation, old or new) from garbage.
constexpr std::uint64_t kStep = 1001;

std::uint64_t expected_target(std::uint64_t x) {
  std::uint64_t acc = x;
  for (int i = 0; i < 3; ++i) acc = acc * 3 + static_cast<std::uint64_t>(i);
  return acc;
}

using TargetFn = std::uint64_t (*)(std::uint64_t);
std::atomic<TargetFn> g_original{nullptr};
std::atomic<std::uint64_t> g_detour_calls{0};

struct Options {
  int seconds = 10;
  int threads = 2;
  int interval = 1;
  unsigned seed = 1;
};

bool parse(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](int& out) {
      if (i + 1 >= argc) return false;
      out = std::atoi(argv[++i]);
      return out > 0;
    };
    int seed = 0;
    if (a == "--seconds"    ? !value(o.seconds)
        : a == "--threads"  ? !value(o.threads)
        : a == "--interval" ? !value(o.interval)
        : a == "--seed"     ? !(value(seed) && (o.seed = static_cast<unsigned>(seed), true))
                            : true) {
      std::fprintf(stderr, "usage: soak [--seconds N] [--threads N] [--interval N] [--seed N]\n");
      return false;
    }
  }
  return true;
}

std::size_t resident_kib() {
  long pages_total = 0, pages_resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages_total, &pages_resident) != 2) pages_resident = 0;
    std::fclose(f);
  }
  return static_cast<std::size_t>(pages_resident) * static_cast<std::size_t>(sysconf(_SC_PAGESIZE)) / 1024;
}

// `mov rax, rdi; add rax, kStep * k; ret`.
Result<std::uintptr_t> emit_implementation(runtime::Jit& jit, std::uint64_t k) {
  asmjit::CodeHolder code;
  code.init(runtime::Jit::environment());
  asmjit::x86::Assembler a(&code);
  a.mov(asmjit::x86::rax, asmjit::x86::rdi);
  a.add(asmjit::x86::rax, static_cast<std::int32_t>(kStep * k));
  a.ret();
  auto fn = jit.add(code);
  if (!fn) return tl::unexpected(fn.error());
  return reinterpret_cast<std::uintptr_t>(*fn);
}

constexpr std::uint8_t kNop5[] = {0x0F, 0x1F, 0x44, 0x00, 0x00};

// The entry stub: a 5-byte nop (then `ud2`), which the first transaction turns into `jmp rel32`.
Result<std::uintptr_t> emit_entry(runtime::Jit& jit) {
  asmjit::CodeHolder code;
  code.init(runtime::Jit::environment());
  asmjit::x86::Assembler a(&code);
  a.embed(kNop5, sizeof kNop5);
  a.ud2();
  auto fn = jit.add(code);
  if (!fn) return tl::unexpected(fn.error());
  return reinterpret_cast<std::uintptr_t>(*fn);
}

std::vector<std::uint8_t> jmp_rel32(std::uintptr_t from, std::uintptr_t to) {
  std::int32_t rel = static_cast<std::int32_t>(static_cast<std::int64_t>(to) - static_cast<std::int64_t>(from + 5));
  std::vector<std::uint8_t> b(5);
  b[0] = 0xE9;
  std::memcpy(&b[1], &rel, 4);
  return b;
}

struct Counters {
  std::uint64_t emits = 0, releases = 0, patches = 0, hooks = 0, unhooks = 0, failures = 0;
};

}  // namespace

// The detour adds nothing: it counts and calls the original. Exported (like
// soak_target) so that its extent is known from the dynamic symbol table.
extern "C" __attribute__((noinline)) std::uint64_t soak_detour(std::uint64_t x) {
  g_detour_calls.fetch_add(1, std::memory_order_relaxed);
  return g_original.load(std::memory_order_acquire)(x);
}

int main(int argc, char** argv) {
  Options opt;
  if (!parse(argc, argv, opt)) return 2;

  auto heap = runtime::CodeHeap::global();
  if (!heap) {
    std::fprintf(stderr, "soak: %s\n", heap.error().describe().c_str());
    return 1;
  }
  runtime::Jit jit(**heap);
  std::mt19937_64 rng(opt.seed);

  struct Impl {
    std::uintptr_t address;
  };
  std::vector<Impl> live;     // Implementations the entry may point at.
  std::vector<Impl> retired;  // No longer a target; released once no thread is inside.
  std::uint64_t next_k = 1;
  for (int i = 0; i < 4; ++i) {
    auto impl = emit_implementation(jit, next_k++);
    if (!impl) return std::fprintf(stderr, "soak: %s\n", impl.error().describe().c_str()), 1;
    live.push_back({*impl});
  }
  auto entry = emit_entry(jit);
  if (!entry) return std::fprintf(stderr, "soak: %s\n", entry.error().describe().c_str()), 1;
  std::uintptr_t current = live[0].address;
  {
    patcher::Transaction tx;
    std::vector<std::uint8_t> nop5(std::begin(kNop5), std::end(kNop5));
    auto ok = tx.add({*entry, nop5, jmp_rel32(*entry, current), std::nullopt});
    if (ok) ok = tx.commit();
    if (!ok) return std::fprintf(stderr, "soak: %s\n", ok.error().describe().c_str()), 1;
  }

  // The detour's extent: after a hook is removed, its trampoline may be freed
  // only once no thread is still inside the detour (it may be about to call it).
  auto detour_extent = runtime::function_containing(reinterpret_cast<std::uintptr_t>(&soak_detour));
  if (!detour_extent) return std::fprintf(stderr, "soak: %s\n", detour_extent.error().describe().c_str()), 1;
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> calls{0}, wrong{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < opt.threads; ++t) {
    workers.emplace_back([&, t] {
      auto call_entry = reinterpret_cast<TargetFn>(*entry);
      std::uint64_t x = static_cast<std::uint64_t>(t) << 32;
      while (!stop.load(std::memory_order_relaxed)) {
        ++x;
        std::uint64_t r = call_entry(x);
        if (r <= x || (r - x) % kStep != 0) wrong.fetch_add(1, std::memory_order_relaxed);
        if (soak_target(x) != expected_target(x)) wrong.fetch_add(1, std::memory_order_relaxed);
        calls.fetch_add(2, std::memory_order_relaxed);
      }
    });
  }

  Counters n;
  patcher::Hook hook;
  auto note_failure = [&](const Error& e) {
    ++n.failures;
    std::fprintf(stderr, "soak: operation failed: %s\n", e.describe().c_str());
  };

  bool hook_code_retired = false;

  // Releases retired implementations (and removed hooks' code) that no thread is executing right now.
  auto release_retired = [&] {
    if (retired.empty() && !hook_code_retired) return;
    std::vector<runtime::CodeRange> ranges;
    for (const Impl& impl : retired)
      ranges.push_back({impl.address, impl.address + heap.value()->allocation_size(impl.address).value_or(0)});
    ranges.push_back({detour_extent->start, detour_extent->end});
    auto in_use = runtime::ranges_in_use(ranges, std::chrono::milliseconds(1000));
    if (!in_use) return;  // Not proven: keep everything for the next round.
    std::vector<Impl> keep;
    for (std::size_t i = 0; i < retired.size(); ++i) {
      const Impl& impl = retired[i];
      if ((*in_use)[i]) {
        keep.push_back(impl);
      } else if (auto ok = jit.release(reinterpret_cast<void*>(impl.address)); ok) {
        ++n.releases;
      } else {
        note_failure(ok.error());
      }
    }
    retired = std::move(keep);
    if (hook_code_retired && !in_use->back()) {
      if (auto freed = patcher::release_retired_hook_code(); freed) {
        hook_code_retired = false;
      } else {
        note_failure(freed.error());
      }
    }
  };

  const auto start = Clock::now();
  auto last = start;
  Counters at_last;
  std::uint64_t calls_at_last = 0;
  std::size_t rss_after_warmup = 0, mapped_after_warmup = 0, rss_peak_after_warmup = 0, mapped_peak = 0;
  int interval_index = 0;
  std::printf("%8s %10s %9s %9s %9s %9s %12s %10s %11s %10s %9s\n", "t[s]", "calls/s", "emit/s", "free/s", "patch/s",
              "hook/s", "rss[KiB]", "heap_map", "heap_used", "fragments", "failures");

  while (Clock::now() - start < std::chrono::seconds(opt.seconds)) {
    switch (rng() % 6) {
      case 0: {  // Emit a new implementation.
        if (live.size() >= 64) break;
        if (auto impl = emit_implementation(jit, next_k++)) {
          live.push_back({*impl});
          ++n.emits;
        } else {
          note_failure(impl.error());
        }
        break;
      }
      case 1: {  // Retire an implementation that the entry does not point at.
        if (live.size() <= 2) break;
        std::size_t i = rng() % live.size();
        if (live[i].address == current) break;
        retired.push_back(live[i]);
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
        break;
      }
      case 2:
      case 3: {  // Retarget the entry with a live transaction.
        std::uintptr_t next = live[rng() % live.size()].address;
        if (next == current) break;
        patcher::Transaction tx;
        auto added = tx.add({*entry, jmp_rel32(*entry, current), jmp_rel32(*entry, next), std::nullopt});
        auto ok = added ? tx.commit() : added;
        if (ok) {
          current = next;
          ++n.patches;
        } else {
          note_failure(ok.error());
        }
        break;
      }
      case 4: {  // Hook or unhook the compiled function.
        if (!hook.installed()) {
          // Installed disabled, so no caller reaches the detour before it knows the trampoline.
          patcher::HookOptions options;
          options.enabled = false;
          auto h = patcher::Hook::install(reinterpret_cast<void*>(&soak_target), reinterpret_cast<void*>(&soak_detour),
                                          options);
          if (h) {
            g_original.store(h->original<TargetFn>(), std::memory_order_release);
            hook = std::move(*h);
            if (auto ok = hook.enable(); !ok) note_failure(ok.error());
            ++n.hooks;
          } else {
            note_failure(h.error());
          }
        } else if (auto ok = hook.remove(); ok) {
          hook_code_retired = true;
          ++n.unhooks;
        } else {
          note_failure(ok.error());
        }
        break;
      }
      case 5: release_retired(); break;
    }

    auto now = Clock::now();
    if (now - last >= std::chrono::seconds(opt.interval)) {
      // Keep the process's own reclaimers running, as a long-lived user would.
      (void)patcher::reclaim_retired_copies();
      double dt = std::chrono::duration<double>(now - last).count();
      auto rate = [&](std::uint64_t a, std::uint64_t b) { return static_cast<double>(a - b) / dt; };
      std::uint64_t c = calls.load();
      runtime::HeapStats hs = heap.value()->stats();
      std::size_t rss = resident_kib();
      ++interval_index;
      if (interval_index == 2) {
        rss_after_warmup = rss;
        mapped_after_warmup = hs.mapped;
      }
      if (interval_index >= 2) {
        rss_peak_after_warmup = std::max(rss_peak_after_warmup, rss);
        mapped_peak = std::max(mapped_peak, hs.mapped);
      }
      std::printf("%8.1f %10.0f %9.0f %9.0f %9.0f %9.0f %12zu %10zu %11zu %10zu %9llu\n",
                  std::chrono::duration<double>(now - start).count(), rate(c, calls_at_last),
                  rate(n.emits, at_last.emits), rate(n.releases, at_last.releases), rate(n.patches, at_last.patches),
                  rate(n.hooks + n.unhooks, at_last.hooks + at_last.unhooks), rss, hs.mapped, hs.used, hs.fragments,
                  static_cast<unsigned long long>(n.failures));
      std::fflush(stdout);
      last = now;
      at_last = n;
      calls_at_last = c;
    }
  }

  stop.store(true);
  for (auto& w : workers) w.join();
  if (hook.installed() && !hook.remove()) ++n.failures;

  // Memory is bounded when freed code and trampolines are reused: after
  // warm-up, neither the heap's mapping nor the resident set keeps growing.
  constexpr std::size_t kRssSlackKib = 16 * 1024;
  bool bounded = interval_index < 3 || (rss_peak_after_warmup <= rss_after_warmup + kRssSlackKib &&
                                        mapped_peak <= 2 * mapped_after_warmup + (1u << 20));
  std::printf(
      "soak: seconds=%d threads=%d calls=%llu wrong=%llu emits=%llu releases=%llu patches=%llu hooks=%llu "
      "unhooks=%llu failures=%llu detour_calls=%llu memory=%s\n",
      opt.seconds, opt.threads, static_cast<unsigned long long>(calls.load()),
      static_cast<unsigned long long>(wrong.load()), static_cast<unsigned long long>(n.emits),
      static_cast<unsigned long long>(n.releases), static_cast<unsigned long long>(n.patches),
      static_cast<unsigned long long>(n.hooks), static_cast<unsigned long long>(n.unhooks),
      static_cast<unsigned long long>(n.failures), static_cast<unsigned long long>(g_detour_calls.load()),
      bounded ? "bounded" : "GROWING");
  return wrong.load() == 0 && n.failures == 0 && bounded ? 0 : 1;
}
