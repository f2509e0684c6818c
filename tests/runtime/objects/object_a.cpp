// A shared object loaded and unloaded by function_bounds_test: one static function.
namespace {
__attribute__((noinline, used)) long a_static(long x) { return x + 1; }
}  // namespace
extern "C" void* punch_test_object_function() { return reinterpret_cast<void*>(&a_static); }
