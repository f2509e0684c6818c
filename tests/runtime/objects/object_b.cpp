// Like object_a.cpp, with other functions before the static one: when it is
// loaded where object_a was, a stale cache would give object_a's symbols.
namespace {
__attribute__((noinline, used)) long b_filler_one(long x) { return x * x * x + 7 * x - 3; }
__attribute__((noinline, used)) long b_filler_two(long x) { return b_filler_one(x) ^ (x << 3); }
__attribute__((noinline, used)) long b_static(long x) { return b_filler_two(x) + 2; }
}  // namespace
extern "C" void* punch_test_object_function() { return reinterpret_cast<void*>(&b_static); }
