/* Compiled by gcc and clang at -O0 (leaf code keeping locals in the red zone)
 * and -O2 -fcf-protection into shared libraries; mid_hook_test.cpp mid-hooks
 * every instruction of mid_c_work in turn and checks its results. */
/* Exported, so calls to it go through the PLT and are never inlined: the
 * sweep steals the call as the last instruction of some hooks. */
__attribute__((noinline)) long mid_c_helper(long v) { return v * 7 + 1; }

long mid_c_work(const long* values, long n, double scale) {
  long sum = 0;
  double acc = 0.0;
  for (long i = 0; i < n; ++i) {
    if (values[i] & 1)
      sum += values[i] * 3;
    else
      sum -= mid_c_helper(values[i]);
    acc += (double)values[i] * scale;
  }
  return sum + (long)acc;
}
