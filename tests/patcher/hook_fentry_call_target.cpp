// A hook target compiled with -pg -mfentry (see extra.cmake): its entry is the
// profiling call, `call __fentry__` (clang; gcc without PIE) or
// `call [rip+__fentry__@GOTPCREL]` (gcc with PIE), which a hook replaces.
extern "C" long hook_fentry_call_target(long x) { return 5 * x + 1; }
