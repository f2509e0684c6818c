/* Functions an ordinary program has, hooked by tests/flavours/driver.cpp.
 *
 * Compiled by gcc and clang, -O0 and -O2, with and without CET, PIE or not,
 * linked with and without -rdynamic, stripped and not: the functions are
 * static (never exported), one lives in .text.hot, one in .text.unlikely,
 * one has a cold part split off by gcc, and one has no symbol at all, only
 * its FDE. The driver reaches them through `flavour_cases`. */
#include <stdlib.h>

#include "targets.h"

/* Keeps the compiler from folding or cloning what the driver calls. */
#ifdef __clang__
#define TARGET __attribute__((noinline, used))
#else
#define TARGET __attribute__((noinline, noclone, used))
#endif

static volatile long sink;

TARGET static long plain(long x) { return x * 3 + 7; }

TARGET static long helper(long x) {
  sink = x;
  return x ^ 0x55;
}
TARGET static long with_call(long x) { return helper(x) + helper(x + 1); }

/* Explicitly in .text.hot, as profile-guided or hot-attributed code is. */
TARGET __attribute__((section(".text.hot.flavour"))) static long hot(long x) { return x * x + 1; }

/* gcc places cold functions in .text.unlikely. */
TARGET __attribute__((cold)) static long cold(long x) { return 100 - x; }

/* gcc splits the unlikely branch into `split.cold` in .text.unlikely. */
TARGET __attribute__((cold, noreturn)) static void fail_hard(long x) {
  sink = x;
  abort();
}
TARGET static long split(long x) {
  if (__builtin_expect(x == -123456789, 0)) fail_hard(x);
  long sum = 0;
  for (long i = 0; i < (x & 7); ++i) sum += i * x;
  return sum + 11;
}

/* A function with no symbol even before strip: a local label and its CFI
 * (an FDE) only. Its address reaches C through a data word. */
__asm__(
    "  .text\n"
    "  .p2align 4\n"
    ".Lfde_only:\n"
    "  .cfi_startproc\n"
#ifdef __CET__
    "  endbr64\n"
#endif
    "  leaq (%rdi,%rdi,4), %rax\n"
    "  addq $13, %rax\n"
    "  ret\n"
    "  .cfi_endproc\n"
    "  .data\n"
    "  .p2align 3\n"
    "flavour_fde_only_address:\n"
    "  .quad .Lfde_only\n"
    "  .text\n");
extern flavour_fn flavour_fde_only_address __attribute__((visibility("hidden")));

/* Each detour adds a constant to what the original returns. */
#define DETOUR(name)                 \
  static flavour_fn name##_original; \
  TARGET static long name##_detour(long x) { return name##_original(x) + 1000000; }
DETOUR(plain)
DETOUR(with_call)
DETOUR(hot)
DETOUR(cold)
DETOUR(split)
DETOUR(fde_only)

/* A global function: exported only with -rdynamic, named in .symtab until stripped. */
TARGET long flavour_global(long x) { return x * 9 - 2; }
DETOUR(flavour_global)
flavour_fn flavour_global_detour_address = flavour_global_detour;
flavour_fn* flavour_global_original_slot = &flavour_global_original;

#define CASE(name, target, arg) \
  { #name, target, name##_detour, &name##_original, arg }
struct flavour_case flavour_cases[7];
int flavour_case_count;

/* A libc function whose address the program's code takes: in a non-PIE
 * program (`mov $labs, %eax`) its canonical address becomes a PLT stub in the
 * executable, which dlsym returns for "labs". */
TARGET flavour_fn flavour_labs(void) { return labs; }

void flavour_init(void) {
  const struct flavour_case cases[] = {
      CASE(plain, plain, 5), CASE(with_call, with_call, 9), CASE(hot, hot, 12),
      CASE(cold, cold, 40),  CASE(split, split, 6),         CASE(fde_only, flavour_fde_only_address, 8),
  };
  flavour_case_count = (int)(sizeof cases / sizeof cases[0]);
  for (int i = 0; i < flavour_case_count; ++i) flavour_cases[i] = cases[i];
}
