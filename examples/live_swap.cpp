// live_swap: worker threads call code while the main thread swaps its
// implementation through live transactions. Every result must be the old or
// the new value.
//
//   live_swap --threads 4 --swaps 2000 --kind site       # one instruction: mov eax, 1 <-> mov eax, 2
//   live_swap --threads 4 --swaps 2000 --kind prologue   # a compiled function's prologue <-> jmp elsewhere
//
// Last line: `live_swap: swaps=S calls=C wrong=W`; exit status 0 only when W is 0.
#include <asmjit/x86.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <punch/disasm/instruction.hpp>
#include <punch/disasm/relocate.hpp>
#include <punch/disasm/validate.hpp>
#include <punch/patcher/transaction.hpp>
#include <punch/runtime/code_heap.hpp>
#include <punch/runtime/jit.hpp>
#include <punch/runtime/sync.hpp>

using namespace punch;

// A compiled function whose entry holds several instructions (the prologue kind patches it).
// It lives alone in its own section, whose bounds the linker provides, so its
// extent is known even though an executable exports no symbols by default.
extern "C" __attribute__((noinline, used, section("live_swap_text"))) int live_swap_compiled(int x) {
  volatile int y = x;
  return y + 1;
}
extern "C" const std::uint8_t __start_live_swap_text[], __stop_live_swap_text[];

namespace {

int usage() {
  std::fprintf(stderr, "usage: live_swap --threads N --swaps N --kind site|prologue\n");
  return 2;
}

Result<std::uintptr_t> emit(runtime::Jit& jit, const std::function<void(asmjit::x86::Assembler&)>& body) {
  asmjit::CodeHolder code;
  code.init(runtime::Jit::environment());
  asmjit::x86::Assembler a(&code);
  body(a);
  auto fn = jit.add(code);
  if (!fn) return tl::unexpected(fn.error());
  return reinterpret_cast<std::uintptr_t>(*fn);
}

// The site for `kind`, plus how a result is checked.
struct Plan {
  patcher::Site site;
  int (*call)(int) = nullptr;
  int old_delta = 0, new_delta = 0;  // result == x + delta
};

Result<Plan> plan_site(runtime::Jit& jit) {
  // f(x) = x + 1 via `mov eax, 1; add eax, edi; ret`; the mov flips to `mov eax, 2`.
  auto f = emit(jit, [](asmjit::x86::Assembler& a) {
    a.mov(asmjit::x86::eax, 1);
    a.add(asmjit::x86::eax, asmjit::x86::edi);
    a.ret();
  });
  if (!f) return tl::unexpected(f.error());
  Plan p;
  p.site = patcher::Site{*f, {0xB8, 1, 0, 0, 0}, {0xB8, 2, 0, 0, 0}, std::nullopt};
  p.call = reinterpret_cast<int (*)(int)>(*f);
  p.old_delta = 1;
  p.new_delta = 2;
  return p;
}

Result<Plan> plan_prologue(runtime::Jit& jit) {
  const auto entry = reinterpret_cast<std::uintptr_t>(&live_swap_compiled);
  // The other implementation, x + 2 (`lea eax, [rdi+2]; ret`), placed within
  // rel32 reach of the entry so that a 5-byte jump reaches it.
  auto g = jit.heap().allocate(16, 16, runtime::AddressWindow::rel32_reach(entry));
  if (!g) return tl::unexpected(g.error());
  const std::uint8_t alt[] = {0x8D, 0x47, 0x02, 0xC3};
  if (auto s = jit.heap().writer().write(*g, alt); !s) return tl::unexpected(s.error());
  if (auto s = runtime::sync_all_threads(); !s) return tl::unexpected(s.error());
  // Cover whole instructions of the entry, at least the 5 bytes a jmp rel32 needs.
  std::vector<std::uint8_t> code(reinterpret_cast<const std::uint8_t*>(entry), __stop_live_swap_text);
  std::size_t n = 0;
  while (n < 5) {
    auto insn = disasm::decode(disasm::CodeSpan{entry, code}, entry + n);
    if (!insn) return tl::unexpected(insn.error());
    n += insn->length;
  }
  auto jump = disasm::encode_jmp_rel32(entry, *g);
  if (!jump) return tl::unexpected(jump.error());
  std::vector<std::uint8_t> replacement = *jump;
  replacement.resize(n, 0xCC);  // Never executed: the jump leaves first.
  Plan p;
  const disasm::FunctionExtent extent{reinterpret_cast<std::uintptr_t>(__start_live_swap_text),
                                      reinterpret_cast<std::uintptr_t>(__stop_live_swap_text),
                                      disasm::FunctionExtent::Source::kCaller};
  p.site = patcher::Site{entry, {code.begin(), code.begin() + static_cast<std::ptrdiff_t>(n)}, replacement, extent};
  p.call = &live_swap_compiled;
  p.old_delta = 1;
  p.new_delta = 2;
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 4;
  long swaps = 1000;
  std::string kind = "site";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads"))
      threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--swaps"))
      swaps = std::atol(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--kind"))
      kind = argv[i + 1];
    else
      return usage();
  }
  if (argc % 2 == 0 || threads < 1 || swaps < 0 || (kind != "site" && kind != "prologue")) return usage();

  auto heap = runtime::CodeHeap::global();
  if (!heap) {
    std::fprintf(stderr, "live_swap: %s\n", heap.error().describe().c_str());
    return 1;
  }
  runtime::Jit jit(**heap);
  auto plan = kind == "site" ? plan_site(jit) : plan_prologue(jit);
  if (!plan) {
    std::fprintf(stderr, "live_swap: %s\n", plan.error().describe().c_str());
    return 1;
  }
  patcher::Transaction tx;
  if (auto s = tx.add(plan->site); !s) {
    std::fprintf(stderr, "live_swap: %s\n", s.error().describe().c_str());
    return 1;
  }

  std::atomic<bool> stop{false};
  std::atomic<unsigned long long> calls{0}, wrong{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t)
    workers.emplace_back([&, t] {
      unsigned long long mine = 0, bad = 0;
      for (int x = t; !stop.load(std::memory_order_relaxed); x = (x + 7) & 0xffff, ++mine) {
        const int r = plan->call(x);
        if (r != x + plan->old_delta && r != x + plan->new_delta) ++bad;
      }
      calls += mine;
      wrong += bad;
    });

  long done = 0;
  int status = 0;
  for (; done < swaps; ++done) {
    auto s = tx.committed() ? tx.revert() : tx.commit();
    if (!s) {
      std::fprintf(stderr, "live_swap: swap %ld: %s\n", done, s.error().describe().c_str());
      status = 1;
      break;
    }
  }
  if (tx.committed()) (void)tx.revert();
  stop = true;
  for (auto& w : workers) w.join();
  const auto stats = patcher::live_stats();
  std::printf(
      "live_swap: kind=%s threads=%d traps_waited=%llu traps_emulated=%llu traps_redirected=%llu "
      "threads_moved=%llu\n",
      kind.c_str(), threads, static_cast<unsigned long long>(stats.traps_waited),
      static_cast<unsigned long long>(stats.traps_emulated), static_cast<unsigned long long>(stats.traps_redirected),
      static_cast<unsigned long long>(stats.threads_moved));
  std::printf("live_swap: swaps=%ld calls=%llu wrong=%llu\n", done, calls.load(), wrong.load());
  return status == 0 && wrong.load() == 0 ? 0 : 1;
}
