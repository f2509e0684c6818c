// Jit: asmjit code into never-writable pages, callable, released, batched.
#include <punch/runtime/jit.hpp>

#include <asmjit/x86.h>
#include <gtest/gtest.h>

#include <punch/runtime/maps.hpp>
#include <punch/runtime/fault_injection.hpp>

#include "memory_snapshot.hpp"
#include "own_heap_fixture.hpp"

namespace punch::runtime {
namespace {

using namespace asmjit;

// int f(int x) { return x + k; }
void emit_add(CodeHolder& code, int k) {
  code.init(Jit::environment());
  x86::Assembler a(&code);
  a.lea(x86::eax, x86::ptr(x86::edi, k));
  a.ret();
}

// int f() { return *table_entry; } with the constant in the code's own data (rip-relative).
void emit_load_constant(CodeHolder& code, int value) {
  code.init(Jit::environment());
  x86::Assembler a(&code);
  Label data = a.newLabel();
  a.mov(x86::eax, x86::dword_ptr(data));
  a.ret();
  a.align(AlignMode::kData, 8);
  a.bind(data);
  a.embedInt32(value);
}

int host_function(int x) { return x * 3; }

// int f(int x) { return host_function(x) + 1; }: an absolute call, out of rel32 reach or not.
void emit_call_host(CodeHolder& code) {
  code.init(Jit::environment());
  x86::Assembler a(&code);
  a.sub(x86::rsp, 8);
  a.call(imm(reinterpret_cast<std::uint64_t>(&host_function)));
  a.add(x86::rsp, 8);
  a.add(x86::eax, 1);
  a.ret();
}

class JitTest : public test::OwnHeapTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(make_heap(64 * 1024));
    jit = std::make_unique<Jit>(*heap);
  }

  std::unique_ptr<Jit> jit;
};

TEST_F(JitTest, AddedFunctionRunsFromReadExecutePages) {
  CodeHolder code;
  emit_add(code, 42);
  auto fn = jit->add_as<int (*)(int)>(code);
  ASSERT_TRUE(fn) << fn.error().describe();
  EXPECT_EQ((*fn)(1), 43);
  auto m = find_mapping(reinterpret_cast<std::uintptr_t>(*fn));
  ASSERT_TRUE(m);
  EXPECT_TRUE(m->readable && m->executable && !m->writable && !m->shared);
}

TEST_F(JitTest, EmbeddedDataAndAbsoluteCallsAreRelocated) {
  CodeHolder c1, c2;
  emit_load_constant(c1, 0x12345678);
  emit_call_host(c2);
  auto load = jit->add_as<int (*)()>(c1);
  auto call = jit->add_as<int (*)(int)>(c2);
  ASSERT_TRUE(load && call);
  EXPECT_EQ((*load)(), 0x12345678);
  EXPECT_EQ((*call)(5), 16);
}

TEST_F(JitTest, BatchIsOneRunOfFunctionsThatAllWork) {
  constexpr int kCount = 20;
  std::vector<std::unique_ptr<CodeHolder>> holders;
  std::vector<CodeHolder*> pointers;
  for (int i = 0; i < kCount; ++i) {
    holders.push_back(std::make_unique<CodeHolder>());
    emit_add(*holders.back(), i);
    pointers.push_back(holders.back().get());
  }
  auto fns = jit->add_batch(pointers);
  ASSERT_TRUE(fns) << fns.error().describe();
  ASSERT_EQ(fns->size(), static_cast<std::size_t>(kCount));
  for (int i = 0; i < kCount; ++i) EXPECT_EQ(reinterpret_cast<int (*)(int)>((*fns)[i])(100), 100 + i);
  EXPECT_EQ(heap->stats().allocations, static_cast<std::size_t>(kCount));
  for (void* fn : *fns) EXPECT_TRUE(jit->release(fn));
  EXPECT_EQ(heap->stats().allocations, 0u);
}

TEST_F(JitTest, ReleasedFunctionBecomesTrapsAndDoubleReleaseIsRefused) {
  CodeHolder code;
  emit_add(code, 1);
  auto fn = jit->add(code);
  ASSERT_TRUE(fn);
  ASSERT_TRUE(jit->release(*fn));
  auto bytes = static_cast<const std::uint8_t*>(*fn);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(bytes[i], 0xCC) << "offset " << i;
  test::MemorySnapshot before(*fn, 16);
  auto again = jit->release(*fn);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::kNotOwned);
  EXPECT_EQ(before.differences(), "");
}

TEST_F(JitTest, FailedBatchWriteLeavesNothingAllocated) {
  CodeHolder warm;
  emit_add(warm, 0);
  ASSERT_TRUE(jit->add(warm));  // An arena exists; its free space is what the batch would take.
  const HeapStats before = heap->stats();
  CodeHolder c1, c2;
  emit_add(c1, 1);
  emit_add(c2, 2);
  CodeHolder* both[] = {&c1, &c2};
  testing::inject_fault(testing::FaultPoint::kWrite, 1, testing::FaultKind::kEio);
  auto fns = jit->add_batch(both);
  ASSERT_FALSE(fns);
  EXPECT_EQ(heap->stats().allocations, before.allocations);
  EXPECT_EQ(heap->stats().used, before.used);
}

TEST_F(JitTest, EmptyCodeHolderIsAnError) {
  CodeHolder code;
  code.init(Jit::environment());
  auto fn = jit->add(code);
  ASSERT_FALSE(fn);
  EXPECT_EQ(fn.error().code, ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace punch::runtime
