/* The functions of tests/flavours/targets.c, as the C++ driver sees them. */
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

typedef long (*flavour_fn)(long);

struct flavour_case {
  const char* name;
  flavour_fn target;    /* A static function (or one with no symbol at all). */
  flavour_fn detour;    /* Returns original(x) + 1000000. */
  flavour_fn* original; /* Where the detour finds the original. */
  long arg;
};

extern struct flavour_case flavour_cases[7];
extern int flavour_case_count;
flavour_fn flavour_labs(void); /* &labs, as the program's code takes it. */
void flavour_init(void);

long flavour_global(long x);                     /* Hooked by name. */
extern flavour_fn flavour_global_detour_address; /* Returns original(x) + 1000000. */
extern flavour_fn* flavour_global_original_slot;

#ifdef __cplusplus
}
#endif
