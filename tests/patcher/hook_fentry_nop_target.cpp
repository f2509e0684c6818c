// A hook target compiled with -pg -mfentry -mnop-mcount (g++ only, without
// PIE; see extra.cmake): its entry is a 5-byte nop where the profiling call
// would be. Under clang, which has no -mnop-mcount on x86, it is plain code.
extern "C" long hook_fentry_nop_target(long x) { return 7 * x + 2; }
