// hook_libc — hooking a libc function, the crude way and the punch way.
//
// 1. The classic experiment: write 0xCC (int3) over the first byte of libc's
//    getchar through /proc/self/mem (punch's CodeWriter), call it, catch the
//    SIGTRAP, and put the byte back. The libc page is copied on write: the
//    file on disk and other processes never see the 0xCC.
// 2. Properly: hook `puts` by name, count the calls that go through the
//    detour and the trampoline, remove the hook, and show the original bytes are back.
// Exits 0 on success.
#include <setjmp.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <vector>

#include <punch/patcher/hook.hpp>
#include <punch/runtime/code_writer.hpp>
#include <punch/runtime/safe_read.hpp>

namespace {

sigjmp_buf g_trap_return;
volatile std::uintptr_t g_trap_rip = 0;

void on_sigtrap(int, siginfo_t*, void* context) {
  g_trap_rip = static_cast<std::uintptr_t>(static_cast<ucontext_t*>(context)->uc_mcontext.gregs[REG_RIP]);
  siglongjmp(g_trap_return, 1);
}

int classic_int3_experiment() {
  auto writer = punch::runtime::CodeWriter::global();
  if (!writer) return std::fprintf(stderr, "no code writer: %s\n", writer.error().describe().c_str()), 1;
  auto target = punch::patcher::resolve_symbol({"getchar", "", "libc.so.6"});
  if (!target) return std::fprintf(stderr, "%s\n", target.error().describe().c_str()), 1;
  const auto address = reinterpret_cast<std::uintptr_t>(*target);
  auto original = punch::runtime::safe_read_exact(address, 1);
  if (!original) return std::fprintf(stderr, "%s\n", original.error().describe().c_str()), 1;

  struct sigaction action {
  }, previous{};
  action.sa_sigaction = on_sigtrap;
  action.sa_flags = SA_SIGINFO;
  sigaction(SIGTRAP, &action, &previous);
  const std::uint8_t int3 = 0xCC;
  if (auto s = (*writer)->write(address, {&int3, 1}); !s)
    return std::fprintf(stderr, "write: %s\n", s.error().describe().c_str()), 1;
  std::printf("1. wrote 0xCC over getchar at %s (was 0x%02x)\n", punch::at(address).c_str(), (*original)[0]);

  volatile bool trapped = false;
  if (sigsetjmp(g_trap_return, 1) == 0) {
    int (*volatile call)() = reinterpret_cast<int (*)()>(address);
    call();  // Traps on its first byte: never reads stdin.
  } else {
    trapped = true;
  }
  sigaction(SIGTRAP, &previous, nullptr);
  if (auto s = (*writer)->write(address, *original); !s)
    return std::fprintf(stderr, "restore: %s\n", s.error().describe().c_str()), 1;
  std::printf("   SIGTRAP caught: %s, rip %s (one past the int3); byte restored\n", trapped ? "yes" : "no",
              punch::at(g_trap_rip).c_str());
  return trapped && g_trap_rip == address + 1 ? 0 : 1;
}

std::atomic<int> g_puts_calls{0};
int (*g_original_puts)(const char*) = nullptr;

int counting_puts(const char* text) {
  g_puts_calls.fetch_add(1);
  return g_original_puts(text);  // Through the trampoline: the real puts.
}

int hook_puts_properly() {
  // libc's own puts, named by object: the global scope may hold an interposer (e.g. a sanitizer's).
  auto address = punch::patcher::resolve_symbol({"puts", "", "libc.so.6"});
  if (!address) return std::fprintf(stderr, "%s\n", address.error().describe().c_str()), 1;
  auto before = punch::runtime::safe_read_exact(reinterpret_cast<std::uintptr_t>(*address), 16);
  if (!before) return 1;

  // g_original_puts is set before any call can reach the detour.
  auto hook = punch::patcher::Hook::install({"puts", "", "libc.so.6"}, counting_puts, &g_original_puts);
  if (!hook) return std::fprintf(stderr, "hook puts: %s\n", hook.error().describe().c_str()), 1;
  const auto info = hook->info();
  std::printf("2. hooked puts at %s (%s, %zu bytes replaced)\n", punch::at(info.target).c_str(),
              std::string(punch::patcher::to_string(info.kind)).c_str(), info.stolen);
  std::fflush(stdout);
  auto libc_puts = reinterpret_cast<int (*)(const char*)>(*address);
  for (int i = 0; i < 3; ++i) libc_puts("   hello through the trampoline");
  if (auto s = hook->remove(); !s) return std::fprintf(stderr, "remove: %s\n", s.error().describe().c_str()), 1;
  puts("   (this one is not counted: the hook is gone)");

  auto after = punch::runtime::safe_read_exact(reinterpret_cast<std::uintptr_t>(*address), 16);
  const bool restored = after && *after == *before;
  std::printf("   calls counted: %d; original bytes back: %s\n", g_puts_calls.load(), restored ? "yes" : "no");
  return g_puts_calls.load() == 3 && restored ? 0 : 1;
}

}  // namespace

int main() {
  if (classic_int3_experiment() != 0) return 1;
  return hook_puts_properly();
}
