// Patch points: each kind emitted, resolved, changed again and again; batches;
// bad input refused with memory unchanged byte for byte; live changes under
// threads that run the points; invalidation, retirement and reuse of code.
#include <punch/patcher/patch_point.hpp>

#include <gtest/gtest.h>

#include <asmjit/x86.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include <punch/runtime/code_heap.hpp>
#include <punch/runtime/jit.hpp>

#include "memory_snapshot.hpp"

namespace punch::patcher {
namespace {

namespace x86 = asmjit::x86;

runtime::CodeHeap& heap() {
  auto h = runtime::CodeHeap::global();
  EXPECT_TRUE(h) << h.error().describe();
  return **h;
}

// One function with its patch points, added to a heap.
struct Emitted {
  std::uintptr_t address = 0;
  std::vector<PatchPoint> points;
  template <class Fn>
  Fn as() const {
    return reinterpret_cast<Fn>(address);
  }
};

// Emits `body` (which returns its marks), adds it within the marks' window, resolves every mark.
Emitted emit(const std::function<std::vector<PatchPointMark>(x86::Assembler&)>& body,
             runtime::CodeHeap& code_heap = heap()) {
  runtime::Jit jit(code_heap);
  asmjit::CodeHolder code;
  code.init(runtime::Jit::environment());
  x86::Assembler a(&code);
  const std::vector<PatchPointMark> marks = body(a);
  auto fn = jit.add(code, {}, code_window(marks));
  EXPECT_TRUE(fn) << fn.error().describe();
  Emitted out;
  if (!fn) return out;
  out.address = reinterpret_cast<std::uintptr_t>(*fn);
  for (const PatchPointMark& m : marks) {
    auto p = resolve(m, code, *fn);
    EXPECT_TRUE(p) << p.error().describe();
    if (p) out.points.push_back(*p);
  }
  return out;
}

// `int f()` summing `points` imm32 points (`mov ecx, 1; add eax, ecx` each): it returns `points` until they change.
Emitted summing_points(int points, runtime::CodeHeap& code_heap = heap()) {
  return emit(
      [&](x86::Assembler& a) {
        std::vector<PatchPointMark> marks;
        a.xor_(x86::eax, x86::eax);
        for (int i = 0; i < points; ++i) {
          marks.push_back(emit_imm32_point(a, x86::ecx, 1));
          a.add(x86::eax, x86::ecx);
        }
        a.ret();
        return marks;
      },
      code_heap);
}

// `int f() { return value; }` (a call target).
std::uintptr_t returning(int value) {
  return emit([&](x86::Assembler& a) {
           a.mov(x86::eax, value);
           a.ret();
           return std::vector<PatchPointMark>{};
         })
      .address;
}

int cxx_one() { return 1; }
int cxx_two() { return 2; }

TEST(PatchPoint, CallPointIsRetargetedAgainAndAgain) {
  const std::uintptr_t targets[] = {returning(10), returning(20), returning(30)};
  // push/pop keep the stack 16-byte aligned around the call.
  Emitted f = emit([&](x86::Assembler& a) {
    a.push(x86::rbx);
    PatchPointMark m = emit_call_point(a, targets[0]);
    a.pop(x86::rbx);
    a.ret();
    return std::vector<PatchPointMark>{m};
  });
  ASSERT_EQ(f.points.size(), 1u);
  EXPECT_EQ(f.as<int (*)()>()(), 10);
  for (int i = 1; i <= 30; ++i) {
    const std::uintptr_t to = targets[i % 3];
    ASSERT_TRUE(set_call_target(f.points[0], to, targets[(i - 1) % 3])) << i;
    EXPECT_EQ(f.as<int (*)()>()(), 10 * (i % 3 + 1));
    EXPECT_EQ(*f.points[0].current(), to);
  }
}

TEST(PatchPoint, CallPointReachesNativeFunctionsThroughTheCodeWindow) {
  // Jit::add places the code within rel32 reach of the C++ targets.
  Emitted f = emit([&](x86::Assembler& a) {
    a.push(x86::rbx);
    PatchPointMark m = emit_call_point(a, reinterpret_cast<std::uintptr_t>(&cxx_one));
    a.pop(x86::rbx);
    a.ret();
    return std::vector<PatchPointMark>{m};
  });
  ASSERT_EQ(f.points.size(), 1u);
  EXPECT_EQ(f.as<int (*)()>()(), 1);
  ASSERT_TRUE(set_call_target(f.points[0], reinterpret_cast<std::uintptr_t>(&cxx_two)));
  EXPECT_EQ(f.as<int (*)()>()(), 2);
}

TEST(PatchPoint, FarCallPointReachesAnyAddress) {
  Emitted f = emit([&](x86::Assembler& a) {
    a.push(x86::rbx);
    PatchPointMark m = emit_far_call_point(a, reinterpret_cast<std::uintptr_t>(&cxx_one));
    a.pop(x86::rbx);
    a.ret();
    return std::vector<PatchPointMark>{m};
  });
  ASSERT_EQ(f.points.size(), 1u);
  EXPECT_EQ(f.as<int (*)()>()(), 1);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(set_call_target(f.points[0], reinterpret_cast<std::uintptr_t>(i % 2 ? &cxx_one : &cxx_two)));
    EXPECT_EQ(f.as<int (*)()>()(), i % 2 ? 1 : 2);
  }
  // A far call through r8..r15 and through rax.
  for (x86::Gp reg : {x86::rax, x86::r10}) {
    Emitted g = emit([&](x86::Assembler& a) {
      a.push(x86::rbx);
      PatchPointMark m = emit_far_call_point(a, reinterpret_cast<std::uintptr_t>(&cxx_two), reg);
      a.pop(x86::rbx);
      a.ret();
      return std::vector<PatchPointMark>{m};
    });
    ASSERT_EQ(g.points.size(), 1u);
    EXPECT_EQ(g.as<int (*)()>()(), 2);
  }
}

TEST(PatchPoint, JumpPointTailCallsItsTarget) {
  const std::uintptr_t a1 = returning(1), a2 = returning(2);
  Emitted f = emit([&](x86::Assembler& a) { return std::vector<PatchPointMark>{emit_jump_point(a, a1)}; });
  ASSERT_EQ(f.points.size(), 1u);
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(set_jump_target(f.points[0], i % 2 ? a1 : a2));
    EXPECT_EQ(f.as<int (*)()>()(), i % 2 ? 1 : 2);
  }
}

TEST(PatchPoint, GuardFallsThroughUntilEnabled) {
  const std::uintptr_t deopt = returning(-1);
  Emitted f = emit([&](x86::Assembler& a) {
    PatchPointMark g = emit_guard_point(a);
    a.mov(x86::eax, 7);
    a.ret();
    return std::vector<PatchPointMark>{g};
  });
  ASSERT_EQ(f.points.size(), 1u);
  EXPECT_EQ(f.as<int (*)()>()(), 7);
  EXPECT_EQ(*f.points[0].current(), 0u);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(enable_guard(f.points[0], deopt));
    EXPECT_EQ(f.as<int (*)()>()(), -1);
    EXPECT_EQ(*f.points[0].current(), deopt);
    ASSERT_TRUE(disable_guard(f.points[0]));
    EXPECT_EQ(f.as<int (*)()>()(), 7);
  }
}

TEST(PatchPoint, GuardToALabelOfTheSameFunction) {
  runtime::Jit jit(heap());
  asmjit::CodeHolder code;
  code.init(runtime::Jit::environment());
  x86::Assembler a(&code);
  const asmjit::Label slow = a.newLabel();
  PatchPointMark g = emit_guard_point(a);
  a.mov(x86::eax, 1);
  a.ret();
  a.bind(slow);
  a.mov(x86::eax, 2);
  a.ret();
  auto fn = jit.add(code);
  ASSERT_TRUE(fn);
  auto point = resolve(g, code, *fn);
  ASSERT_TRUE(point) << point.error().describe();
  auto slow_at = label_address(code, *fn, slow);
  ASSERT_TRUE(slow_at);
  EXPECT_EQ(reinterpret_cast<int (*)()>(*fn)(), 1);
  ASSERT_TRUE(enable_guard(*point, *slow_at));
  EXPECT_EQ(reinterpret_cast<int (*)()>(*fn)(), 2);
}

TEST(PatchPoint, BranchPointKeepsItsConditionAndChangesItsTarget) {
  const std::uintptr_t t1 = returning(100), t2 = returning(200);
  // f(x): if (x == 0) goto target; return 5.
  Emitted f = emit([&](x86::Assembler& a) {
    a.test(x86::edi, x86::edi);
    PatchPointMark b = emit_branch_point(a, x86::CondCode::kZero, t1);
    a.mov(x86::eax, 5);
    a.ret();
    return std::vector<PatchPointMark>{b};
  });
  ASSERT_EQ(f.points.size(), 1u);
  auto fn = f.as<int (*)(int)>();
  EXPECT_EQ(fn(0), 100);
  EXPECT_EQ(fn(1), 5);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(set_jump_target(f.points[0], i % 2 ? t1 : t2));
    EXPECT_EQ(fn(0), i % 2 ? 100 : 200);
    EXPECT_EQ(fn(3), 5);
  }
}

TEST(PatchPoint, ImmediatesChangeInEveryRegister) {
  for (x86::Gp r32 : {x86::eax, x86::ecx, x86::edi, x86::r8d, x86::r15d}) {
    Emitted f = emit([&](x86::Assembler& a) {
      a.push(x86::r15);
      PatchPointMark m = emit_imm32_point(a, r32, 1);
      a.mov(x86::eax, r32);
      a.pop(x86::r15);
      a.ret();
      return std::vector<PatchPointMark>{m};
    });
    ASSERT_EQ(f.points.size(), 1u);
    EXPECT_EQ(f.as<std::uint32_t (*)()>()(), 1u);
    for (std::uint32_t v : {2u, 0xFFFFFFFFu, 0x80000000u, 0u}) {
      const std::uint64_t before = *f.points[0].current();
      ASSERT_TRUE(set_imm32(f.points[0], v, static_cast<std::uint32_t>(before)));
      EXPECT_EQ(f.as<std::uint32_t (*)()>()(), v);
    }
  }
  for (x86::Gp r64 : {x86::rax, x86::rdx, x86::r9, x86::r15}) {
    Emitted f = emit([&](x86::Assembler& a) {
      a.push(x86::r15);
      PatchPointMark m = emit_imm64_point(a, r64, 1);
      a.mov(x86::rax, r64);
      a.pop(x86::r15);
      a.ret();
      return std::vector<PatchPointMark>{m};
    });
    ASSERT_EQ(f.points.size(), 1u);
    EXPECT_EQ(f.as<std::uint64_t (*)()>()(), 1u);
    for (std::uint64_t v : {0x0123456789ABCDEFull, ~0ull, 0ull, 42ull}) {
      ASSERT_TRUE(set_imm64(f.points[0], v));
      EXPECT_EQ(f.as<std::uint64_t (*)()>()(), v);
    }
  }
}

std::uint64_t g_slots[2] = {111, 222};

TEST(PatchPoint, RipDataPointsAtOtherData) {
  const auto slot0 = reinterpret_cast<std::uintptr_t>(&g_slots[0]);
  const auto slot1 = reinterpret_cast<std::uintptr_t>(&g_slots[1]);
  Emitted load = emit([&](x86::Assembler& a) {
    PatchPointMark m = emit_rip_data_point(a, x86::rax, slot0, RipDataForm::kLoad);
    a.ret();
    return std::vector<PatchPointMark>{m};
  });
  Emitted lea = emit([&](x86::Assembler& a) {
    a.push(x86::r12);  // Callee-saved.
    PatchPointMark m = emit_rip_data_point(a, x86::r12, slot0, RipDataForm::kLea);
    a.mov(x86::rax, x86::r12);
    a.pop(x86::r12);
    a.ret();
    return std::vector<PatchPointMark>{m};
  });
  ASSERT_EQ(load.points.size(), 1u);
  ASSERT_EQ(lea.points.size(), 1u);
  EXPECT_EQ(load.as<std::uint64_t (*)()>()(), 111u);
  for (int i = 0; i < 6; ++i) {
    const std::uintptr_t to = i % 2 ? slot0 : slot1;
    ASSERT_TRUE(set_data_address(load.points[0], to));
    ASSERT_TRUE(set_data_address(lea.points[0], to));
    EXPECT_EQ(load.as<std::uint64_t (*)()>()(), i % 2 ? 111u : 222u);
    EXPECT_EQ(lea.as<std::uintptr_t (*)()>()(), to);
  }
}

TEST(PatchPoint, BatchChangesManyPointsAtOnce) {
  constexpr int kPoints = 200;
  Emitted f = summing_points(kPoints);
  ASSERT_EQ(f.points.size(), static_cast<std::size_t>(kPoints));
  EXPECT_EQ(f.as<int (*)()>()(), kPoints);
  for (int round = 2; round < 6; ++round) {
    PatchPointBatch batch;
    for (const PatchPoint& p : f.points) ASSERT_TRUE(batch.set_imm32(p, static_cast<std::uint32_t>(round)));
    EXPECT_EQ(batch.size(), static_cast<std::size_t>(kPoints));
    ASSERT_TRUE(batch.commit());
    EXPECT_EQ(f.as<int (*)()>()(), kPoints * round);
  }
}

TEST(PatchPoint, BatchAddedInAnyOrderChangesEveryPoint) {
  constexpr int kPoints = 30;
  Emitted f = summing_points(kPoints);
  ASSERT_EQ(f.points.size(), static_cast<std::size_t>(kPoints));
  PatchPointBatch batch;
  for (int i = kPoints - 1; i >= 0; i -= 2) ASSERT_TRUE(batch.set_imm32(f.points[i], 3));  // Downwards,
  for (int i = 0; i < kPoints; i += 2) ASSERT_TRUE(batch.set_imm32(f.points[i], 2));       // then upwards.
  auto twice = batch.set_imm32(f.points[kPoints / 2], 5);
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().code, ErrorCode::kOverlap) << twice.error().describe();
  ASSERT_TRUE(batch.commit());
  EXPECT_EQ(f.as<int (*)()>()(), kPoints / 2 * 3 + kPoints / 2 * 2);
}

// ---- Repeated batches over one function ----
// A commit reuses the function's decode from the commit before (the
// container memo) when the function's bytes are the same: every refusal must
// still happen after batches have run over the same points, and a change made
// to the function by other means between two batches must be seen.

// `kPoints` imm32 points in one function (`mov ecx, v; add eax, ecx` each) and a call point; returns the sum.
Emitted points_and_call(int points, std::uintptr_t callee) {
  return emit([&](x86::Assembler& a) {
    std::vector<PatchPointMark> marks;
    a.push(x86::rbx);
    a.xor_(x86::ebx, x86::ebx);
    for (int i = 0; i < points; ++i) {
      marks.push_back(emit_imm32_point(a, x86::ecx, 1));
      a.add(x86::ebx, x86::ecx);
    }
    marks.push_back(emit_call_point(a, callee));
    a.add(x86::eax, x86::ebx);
    a.pop(x86::rbx);
    a.ret();
    return marks;
  });
}

// A batch setting every imm32 point of `f` to `value` (the call point, last, stays).
Status set_all(const Emitted& f, std::uint32_t value, std::optional<std::uint32_t> expected = {}) {
  PatchPointBatch batch;
  for (std::size_t i = 0; i + 1 < f.points.size(); ++i) PUNCH_TRY(batch.set_imm32(f.points[i], value, expected));
  return batch.commit();
}

TEST(PatchPointRepeated, BatchesOverTheSamePointsStillRefuseWhatIsWrong) {
  constexpr int kPoints = 50;
  const std::uintptr_t zero = returning(0);
  Emitted f = points_and_call(kPoints, zero);
  ASSERT_EQ(f.points.size(), static_cast<std::size_t>(kPoints + 1));
  const std::size_t size = f.points.back().address + 5 - f.address;
  for (std::uint32_t v = 2; v < 5; ++v) ASSERT_TRUE(set_all(f, v));  // The memo holds the function now.
  ASSERT_EQ(f.as<int (*)()>()(), kPoints * 4);

  {  // A stale expected value.
    const test::MemorySnapshot before(f.address, size);
    auto s = set_all(f, 7, 3);
    ASSERT_FALSE(s);
    EXPECT_EQ(s.error().code, ErrorCode::kConflict) << s.error().describe();
    EXPECT_EQ(s.error().address, f.points[0].address);
    EXPECT_TRUE(before.unchanged()) << before.differences();
  }
  {  // A target out of rel32 reach, in a batch with the other points.
    const test::MemorySnapshot before(f.address, size);
    PatchPointBatch batch;
    for (int i = 0; i < kPoints; ++i) ASSERT_TRUE(batch.set_imm32(f.points[i], 8));
    auto s = batch.set_call_target(f.points.back(), f.address + (std::uintptr_t{3} << 30));
    ASSERT_FALSE(s);
    EXPECT_EQ(s.error().code, ErrorCode::kOutOfRange) << s.error().describe();
    EXPECT_EQ(batch.size(), static_cast<std::size_t>(kPoints));  // The other changes stay in the batch.
    EXPECT_TRUE(before.unchanged()) << before.differences();
  }
  {  // A point changed by someone else between add and commit.
    PatchPointBatch batch;
    for (int i = 0; i < kPoints; ++i) ASSERT_TRUE(batch.set_imm32(f.points[i], 9));
    ASSERT_TRUE(set_imm32(f.points[kPoints / 2], 5));
    const test::MemorySnapshot before(f.address, size);
    auto s = batch.commit();
    ASSERT_FALSE(s);
    EXPECT_TRUE(s.error().code == ErrorCode::kConflict || s.error().code == ErrorCode::kBytesMismatch)
        << s.error().describe();
    EXPECT_TRUE(before.unchanged()) << before.differences();
    ASSERT_TRUE(set_imm32(f.points[kPoints / 2], 4));
  }
  ASSERT_TRUE(set_all(f, 4));
  EXPECT_EQ(f.as<int (*)()>()(), kPoints * 4);
}

TEST(PatchPointRepeated, ACodeChangeBetweenBatchesIsSeen) {
  constexpr int kPoints = 20;
  Emitted f = points_and_call(kPoints, returning(0));
  ASSERT_EQ(f.points.size(), static_cast<std::size_t>(kPoints + 1));
  const std::size_t size = f.points.back().address + 5 - f.address;
  for (std::uint32_t v = 2; v < 5; ++v) ASSERT_TRUE(set_all(f, v));
  // The `add ebx, ecx` after point 3 becomes `jmp .+4`: into point 4's
  // immediate. Written directly (not a transaction), as a JIT may rewrite its code.
  const std::uintptr_t add = f.points[3].address + 5;
  ASSERT_EQ(add + 2, f.points[4].address);
  const test::MemorySnapshot original(add, 2);
  const std::uint8_t jump[] = {0xEB, 0x02};
  ASSERT_TRUE(heap().writer().write(add, jump));
  {
    const test::MemorySnapshot before(f.address, size);
    auto s = set_all(f, 6);
    ASSERT_FALSE(s);
    EXPECT_EQ(s.error().code, ErrorCode::kBranchInto) << s.error().describe();
    EXPECT_EQ(s.error().address, f.points[4].address);
    EXPECT_TRUE(before.unchanged()) << before.differences();
  }
  ASSERT_TRUE(heap().writer().write(add, original.bytes()));
  ASSERT_TRUE(set_all(f, 6));
  EXPECT_EQ(f.as<int (*)()>()(), kPoints * 6);
  // Another set of sites in the same function: half the points.
  PatchPointBatch half;
  for (int i = 0; i < kPoints; i += 2) ASSERT_TRUE(half.set_imm32(f.points[i], 7));
  ASSERT_TRUE(half.commit());
  EXPECT_EQ(f.as<int (*)()>()(), kPoints / 2 * 7 + kPoints / 2 * 6);
}

TEST(PatchPointRepeated, RetiredCodeIsRefusedAfterBatches) {
  auto writer = runtime::CodeWriter::global();
  ASSERT_TRUE(writer);
  runtime::CodeHeap own_heap(**writer);
  runtime::Jit jit(own_heap);
  Emitted f = summing_points(10, own_heap);
  ASSERT_EQ(f.points.size(), 10u);
  auto all = [&](std::uint32_t v) -> Status {
    PatchPointBatch batch;
    for (const PatchPoint& p : f.points) PUNCH_TRY(batch.set_imm32(p, v));
    return batch.commit();
  };
  for (std::uint32_t v = 2; v < 5; ++v) ASSERT_TRUE(all(v));
  // Added before the code is retired, committed after: refused at commit.
  PatchPointBatch late;
  for (const PatchPoint& p : f.points) ASSERT_TRUE(late.set_imm32(p, 9));
  ASSERT_TRUE(retire_code(jit, reinterpret_cast<void*>(f.address)));
  const test::MemorySnapshot before(f.address, 10 * 7 + 3);
  auto s = late.commit();
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::kNotOwned) << s.error().describe();
  auto again = all(9);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::kNotOwned) << again.error().describe();
  EXPECT_TRUE(before.unchanged()) << before.differences();
  auto freed = free_retired_code();
  ASSERT_TRUE(freed) << freed.error().describe();
  EXPECT_EQ(freed->freed, 1u);
}

// ---- Bad input: refused, memory unchanged byte for byte. ----

TEST(PatchPoint, NotAPatchPointIsRefused) {
  Emitted f = emit([&](x86::Assembler& a) {
    a.push(x86::rbp);
    a.mov(x86::eax, 3);  // asmjit's own mov: a valid imm32 point too.
    a.pop(x86::rbp);
    a.ret();
    return std::vector<PatchPointMark>{};
  });
  for (PatchPointKind kind :
       {PatchPointKind::kCall, PatchPointKind::kFarCall, PatchPointKind::kJump, PatchPointKind::kGuard,
        PatchPointKind::kBranch, PatchPointKind::kImm32, PatchPointKind::kImm64, PatchPointKind::kRipData}) {
    auto p = PatchPoint::check(f.address, kind);  // push rbp
    ASSERT_FALSE(p) << to_string(kind);
    EXPECT_EQ(p.error().code, ErrorCode::kBytesMismatch) << p.error().describe();
    EXPECT_EQ(p.error().address, f.address);
    EXPECT_NE(p.error().message.find("push"), std::string::npos) << p.error().message;
  }
  EXPECT_TRUE(PatchPoint::check(f.address + 1, PatchPointKind::kImm32));
  // A point of the wrong kind handed to an update: refused, memory unchanged.
  const test::MemorySnapshot before(f.address, 16);
  PatchPoint fake{f.address, PatchPointKind::kImm32};
  auto s = set_imm32(fake, 9);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::kBytesMismatch);
  auto wrong = set_imm64(PatchPoint{f.address + 1, PatchPointKind::kImm32}, 9);
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code, ErrorCode::kInvalidArgument);
  EXPECT_TRUE(before.unchanged()) << before.differences();
  EXPECT_EQ(f.as<int (*)()>()(), 3);
}

TEST(PatchPoint, TargetOutOfRel32ReachIsRefused) {
  const std::uintptr_t t = returning(1);
  Emitted f = emit([&](x86::Assembler& a) {
    a.push(x86::rbx);
    PatchPointMark c = emit_call_point(a, t);
    a.pop(x86::rbx);
    PatchPointMark j = emit_jump_point(a, t);
    PatchPointMark g = emit_guard_point(a);
    PatchPointMark b = emit_branch_point(a, x86::CondCode::kZero, t);
    PatchPointMark d = emit_rip_data_point(a, x86::rax, t);  // Data near the code: the window must hold both.
    a.ret();
    return std::vector<PatchPointMark>{c, j, g, b, d};
  });
  ASSERT_EQ(f.points.size(), 5u);
  const std::uintptr_t far = f.address + (std::uintptr_t{3} << 30);  // 3 GiB away.
  const test::MemorySnapshot before(f.address, 40);
  PatchPointBatch batch;
  ASSERT_TRUE(batch.set_imm64(PatchPoint{}, 0).has_value() == false);  // Wrong kind: nothing added.
  for (const PatchPoint& p : f.points) {
    Status s = p.kind == PatchPointKind::kCall      ? batch.set_call_target(p, far)
               : p.kind == PatchPointKind::kRipData ? batch.set_data_address(p, far)
                                                    : batch.set_jump_target(p, far);
    ASSERT_FALSE(s) << to_string(p.kind);
    EXPECT_EQ(s.error().code, ErrorCode::kOutOfRange) << s.error().describe();
    EXPECT_EQ(s.error().address, p.address);
    char hex[32];
    std::snprintf(hex, sizeof hex, "0x%lx", static_cast<unsigned long>(far));
    EXPECT_NE(s.error().message.find(hex), std::string::npos) << s.error().message;
  }
  EXPECT_EQ(batch.size(), 0u);
  ASSERT_TRUE(batch.commit());  // Empty.
  EXPECT_TRUE(before.unchanged()) << before.differences();
}

TEST(PatchPoint, CodeWhoseTargetsNoPlaceReachesIsNotAdded) {
  // Two targets 6 GiB apart: no address reaches both with rel32.
  asmjit::CodeHolder code;
  code.init(runtime::Jit::environment());
  x86::Assembler a(&code);
  const std::uintptr_t low = 0x100000000, high = low + (std::uintptr_t{6} << 30);
  std::vector<PatchPointMark> marks{emit_call_point(a, low), emit_call_point(a, high)};
  a.ret();
  EXPECT_TRUE(code_window(marks).empty());
  runtime::Jit jit(heap());
  auto fn = jit.add(code, {}, code_window(marks));
  EXPECT_FALSE(fn);
}

TEST(PatchPoint, StaleExpectedValueIsRefused) {
  Emitted f = emit([&](x86::Assembler& a) {
    PatchPointMark m = emit_imm64_point(a, x86::rax, 5);
    a.ret();
    return std::vector<PatchPointMark>{m};
  });
  ASSERT_EQ(f.points.size(), 1u);
  const test::MemorySnapshot before(f.address, 11);
  auto s = set_imm64(f.points[0], 6, 4);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::kConflict) << s.error().describe();
  EXPECT_EQ(s.error().address, f.points[0].address);
  EXPECT_TRUE(before.unchanged()) << before.differences();
  EXPECT_TRUE(set_imm64(f.points[0], 6, 5));
  EXPECT_EQ(f.as<std::uint64_t (*)()>()(), 6u);
}

TEST(PatchPoint, APointChangedBetweenAddAndCommitIsAConflict) {
  Emitted f = emit([&](x86::Assembler& a) {
    PatchPointMark m = emit_imm32_point(a, x86::eax, 1);
    a.ret();
    return std::vector<PatchPointMark>{m};
  });
  ASSERT_EQ(f.points.size(), 1u);
  PatchPointBatch batch;
  ASSERT_TRUE(batch.set_imm32(f.points[0], 2));
  ASSERT_TRUE(set_imm32(f.points[0], 3));  // Someone else, meanwhile.
  const test::MemorySnapshot before(f.address, 6);
  auto s = batch.commit();
  ASSERT_FALSE(s);
  EXPECT_TRUE(s.error().code == ErrorCode::kConflict || s.error().code == ErrorCode::kBytesMismatch)
      << s.error().describe();
  EXPECT_TRUE(before.unchanged()) << before.differences();
  EXPECT_EQ(f.as<int (*)()>()(), 3);
}

// ---- Invalidation, retirement, freeing and reuse. ----

TEST(PatchPoint, InvalidatedEntryGoesToTheStubAndTheCodeIsFreedAndReused) {
  auto writer = runtime::CodeWriter::global();
  ASSERT_TRUE(writer);
  runtime::CodeHeap own_heap(**writer);  // A private heap: its first-fit reuse is predictable.
  runtime::Jit jit(own_heap);
  const std::uintptr_t stub = emit(
                                  [&](x86::Assembler& a) {
                                    a.mov(x86::eax, -1);
                                    a.ret();
                                    return std::vector<PatchPointMark>{};
                                  },
                                  own_heap)
                                  .address;
  Emitted f = emit(
      [&](x86::Assembler& a) {
        PatchPointMark entry = emit_patchable_entry(a);
        PatchPointMark c = emit_imm32_point(a, x86::eax, 1);
        a.ret();
        return std::vector<PatchPointMark>{entry, c};
      },
      own_heap);
  ASSERT_EQ(f.points.size(), 2u);
  EXPECT_EQ(f.points[0].address, f.address);
  EXPECT_EQ(f.as<int (*)()>()(), 1);
  {
    const Status invalidated = invalidate_entry(f.address, stub);
    ASSERT_TRUE(invalidated) << invalidated.error().describe();
  }
  EXPECT_EQ(f.as<int (*)()>()(), -1);
  EXPECT_TRUE(invalidate_entry(f.address, stub));  // Idempotent.
  auto other = invalidate_entry(f.address, stub + 16);
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().code, ErrorCode::kConflict);

  ASSERT_TRUE(retire_code(jit, reinterpret_cast<void*>(f.address)));
  EXPECT_TRUE(is_retired(f.points[1].address));
  {  // Changes inside retired code are refused, memory unchanged.
    const test::MemorySnapshot before(f.address, 11);
    auto s = set_imm32(f.points[1], 2);
    ASSERT_FALSE(s);
    EXPECT_EQ(s.error().code, ErrorCode::kNotOwned) << s.error().describe();
    EXPECT_EQ(s.error().address, f.points[1].address);
    EXPECT_TRUE(before.unchanged()) << before.differences();
  }
  auto again = retire_code(jit, reinterpret_cast<void*>(f.address));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::kConflict);

  const std::size_t used = own_heap.stats().used;
  auto freed = free_retired_code();
  ASSERT_TRUE(freed) << freed.error().describe();
  EXPECT_EQ(freed->freed, 1u);
  EXPECT_EQ(freed->waiting, 0u);
  EXPECT_LT(own_heap.stats().used, used);
  EXPECT_FALSE(is_retired(f.address));
  {  // The freed space holds int3: not a patch point any more.
    auto s = set_imm32(f.points[1], 2);
    ASSERT_FALSE(s);
    EXPECT_EQ(s.error().code, ErrorCode::kBytesMismatch) << s.error().describe();
  }
  // Reuse: new code of the same size lands in the freed space.
  Emitted g = emit(
      [&](x86::Assembler& a) {
        PatchPointMark entry = emit_patchable_entry(a);
        PatchPointMark c = emit_imm32_point(a, x86::eax, 4);
        a.ret();
        return std::vector<PatchPointMark>{entry, c};
      },
      own_heap);
  EXPECT_EQ(g.address, f.address);
  EXPECT_EQ(g.as<int (*)()>()(), 4);
}

TEST(PatchPoint, RetiredCodeWaitsWhileAThreadRunsInsideIt) {
  auto writer = runtime::CodeWriter::global();
  ASSERT_TRUE(writer);
  runtime::CodeHeap own_heap(**writer);
  runtime::Jit jit(own_heap);
  static std::atomic<int> spin{1};
  const auto flag = reinterpret_cast<std::uintptr_t>(&spin);
  // f(): while (spin) {} return 0; (the loop is inside f)
  Emitted f = emit(
      [&](x86::Assembler& a) {
        PatchPointMark entry = emit_patchable_entry(a);
        asmjit::Label loop = a.newLabel();
        a.mov(x86::rcx, flag);
        a.bind(loop);
        a.pause();
        a.cmp(x86::dword_ptr(x86::rcx), 0);
        a.jne(loop);
        a.xor_(x86::eax, x86::eax);
        a.ret();
        return std::vector<PatchPointMark>{entry};
      },
      own_heap);
  const std::uintptr_t stub = emit(
                                  [&](x86::Assembler& a) {
                                    a.mov(x86::eax, -1);
                                    a.ret();
                                    return std::vector<PatchPointMark>{};
                                  },
                                  own_heap)
                                  .address;
  spin = 1;
  std::atomic<bool> started{false};
  std::thread runner([&] {
    started = true;
    (void)f.as<int (*)()>()();
  });
  while (!started) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // Inside the loop by now.
  const Status invalidated = invalidate_entry(f.address, stub);
  const int now = f.as<int (*)()>()();  // New calls take the stub; the runner stays in the old code.
  const Status retired = retire_code(jit, reinterpret_cast<void*>(f.address));
  auto first = free_retired_code();
  spin = 0;
  runner.join();
  ASSERT_TRUE(invalidated) << invalidated.error().describe();
  EXPECT_EQ(now, -1);
  ASSERT_TRUE(retired) << retired.error().describe();
  ASSERT_TRUE(first) << first.error().describe();
  EXPECT_EQ(first->freed, 0u);
  EXPECT_EQ(first->waiting, 1u);
  auto second = free_retired_code();
  ASSERT_TRUE(second) << second.error().describe();
  EXPECT_EQ(second->freed, 1u);
  EXPECT_EQ(second->waiting, 0u);
}

// ---- Live: readers never see a torn value or a target never written. ----

TEST(PatchPointLive, ReadersSeeOnlyValuesThatWereWritten) {
  // Each value's halves mirror each other, so a torn immediate (a mix of two
  // writes) is a value never written: high == ~low, and low < kUpdates+1.
  constexpr std::uint32_t kUpdates = 2000;
  auto value_of = [](std::uint32_t i) { return (static_cast<std::uint64_t>(~i) << 32) | i; };
  Emitted imm64 = emit([&](x86::Assembler& a) {
    PatchPointMark m = emit_imm64_point(a, x86::rax, value_of(0));
    a.ret();
    return std::vector<PatchPointMark>{m};
  });
  Emitted imm32 = emit([&](x86::Assembler& a) {
    PatchPointMark m = emit_imm32_point(a, x86::eax, 0x11110000u);
    a.ret();
    return std::vector<PatchPointMark>{m};
  });
  const std::uintptr_t targets[4] = {returning(1), returning(2), returning(3), returning(4)};
  Emitted call = emit([&](x86::Assembler& a) {
    a.push(x86::rbx);
    PatchPointMark m = emit_call_point(a, targets[0]);
    a.pop(x86::rbx);
    a.ret();
    return std::vector<PatchPointMark>{m};
  });
  Emitted guard = emit([&](x86::Assembler& a) {
    PatchPointMark g = emit_guard_point(a);
    a.mov(x86::eax, 7);
    a.ret();
    return std::vector<PatchPointMark>{g};
  });
  ASSERT_EQ(imm64.points.size() + imm32.points.size() + call.points.size() + guard.points.size(), 4u);
  const LiveStats stats_before = live_stats();

  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> wrong{0}, seen{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r)
    readers.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        const std::uint64_t v = imm64.as<std::uint64_t (*)()>()();
        const auto lo = static_cast<std::uint32_t>(v);
        if (static_cast<std::uint32_t>(v >> 32) != ~lo || lo > kUpdates) wrong.fetch_add(1);
        const std::uint32_t w = imm32.as<std::uint32_t (*)()>()();
        if ((w >> 16) != 0x1111u || (w & 0xFFFF) > kUpdates) wrong.fetch_add(1);
        const int c = call.as<int (*)()>()();
        if (c < 1 || c > 4) wrong.fetch_add(1);
        const int g = guard.as<int (*)()>()();
        if (g != 7 && g != 3) wrong.fetch_add(1);
        seen.fetch_add(1, std::memory_order_relaxed);
      }
    });
  for (std::uint32_t i = 1; i <= kUpdates; ++i) {
    PatchPointBatch batch;
    ASSERT_TRUE(batch.set_imm64(imm64.points[0], value_of(i), value_of(i - 1)));
    ASSERT_TRUE(batch.set_imm32(imm32.points[0], 0x11110000u | i, 0x11110000u | (i - 1)));
    ASSERT_TRUE(batch.set_call_target(call.points[0], targets[i % 4], targets[(i - 1) % 4]));
    ASSERT_TRUE(i % 2 ? batch.enable_guard(guard.points[0], targets[2]) : batch.disable_guard(guard.points[0]));
    auto committed = batch.commit();
    ASSERT_TRUE(committed) << committed.error().describe();
  }
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(wrong.load(), 0u);
  EXPECT_GT(seen.load(), 0u);
  const LiveStats after = live_stats();
  // One-instruction changes never need the fix-up round.
  EXPECT_EQ(after.fixup_rounds, stats_before.fixup_rounds);
  EXPECT_EQ(imm64.as<std::uint64_t (*)()>()(), value_of(kUpdates));
}

}  // namespace
}  // namespace punch::patcher
