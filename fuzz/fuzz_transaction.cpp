// libFuzzer: random patch requests (addresses inside and around a JIT-emitted
// region, random expected and new bytes) are validated and committed. Nothing
// may crash, and a refused request must leave the region's bytes unchanged; an
// accepted one is reverted, which must restore them exactly.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <punch/patcher/transaction.hpp>
#include <punch/runtime/code_heap.hpp>
#include <punch/runtime/safe_read.hpp>

namespace {

using namespace punch;

struct Region {
  std::uintptr_t code = 0;
  std::size_t size = 0;
};

// A small function with a few instruction forms (never called: patches to it
// are free), in the middle of its own 4 KiB heap allocation, so the bytes
// around it (int3 filler) belong to no other code and no out-of-line copy.
Region make_region() {
  // clang-format off
  static const std::uint8_t code[] = {
      0x53,                          // push rbx
      0xB8, 0x01, 0x00, 0x00, 0x00,  // mov eax, 1
      0x01, 0xF8,                    // loop: add eax, edi
      0xFF, 0xCE,                    // dec esi
      0x75, 0xFA,                    // jnz loop
      0x85, 0xC0,                    // test eax, eax
      0x74, 0x0A,                    // jz out
      0x48, 0xB9, 1, 2, 3, 4, 5, 6, 7, 8,  // mov rcx, imm64
      0x5B,                          // out: pop rbx
      0xC3,                          // ret
  };
  // clang-format on
  auto heap = runtime::CodeHeap::global();
  if (!heap) std::abort();
  auto block = (*heap)->allocate(4096, 4096);
  if (!block || !(*heap)->writer().write(*block + 1024, code)) std::abort();
  return {*block + 1024, sizeof code};
}

const Region& region() {
  static const Region r = make_region();
  return r;
}

std::vector<std::uint8_t> snapshot(std::uintptr_t from, std::size_t n) {
  std::vector<std::uint8_t> out(n);
  auto got = runtime::safe_read(from, out);
  out.resize(got ? *got : 0);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const Region& r = region();
  // Watch the region and 64 bytes around it (the heap's int3 filler and neighbours).
  const std::uintptr_t watch = r.code - 64;
  const std::size_t watch_size = r.size + 128;
  const auto before = snapshot(watch, watch_size);

  patcher::TransactionOptions options;
  std::size_t pos = 0;
  auto take = [&](std::size_t n) {
    std::vector<std::uint8_t> out;
    for (std::size_t i = 0; i < n && pos < size; ++i) out.push_back(data[pos++]);
    return out;
  };
  if (pos < size) options.allow_unprovable = data[pos++] & 1;
  patcher::Transaction tx(options);
  for (int s = 0; s < 3 && pos + 3 <= size; ++s) {
    const int offset = static_cast<int>(static_cast<std::int8_t>(data[pos])) % 96;  // Inside and around.
    const std::size_t n = 1 + data[pos + 1] % 16;
    const bool use_current = data[pos + 2] & 1;  // Often give the real bytes so deeper checks run.
    pos += 3;
    const std::uintptr_t at = r.code + offset;
    std::vector<std::uint8_t> expected = use_current ? snapshot(at, n) : take(n);
    std::vector<std::uint8_t> replacement = take(expected.size());
    if (expected.empty() || replacement.size() != expected.size()) break;
    (void)tx.add(patcher::Site{at, expected, replacement, std::nullopt});
  }
  (void)tx.validate();
  auto committed = tx.commit();
  if (!committed) {
    if (snapshot(watch, watch_size) != before) std::abort();  // A refused request changed memory.
    return 0;
  }
  if (auto reverted = tx.revert(); !reverted) {
    std::fprintf(stderr, "revert refused: %s\n", reverted.error().describe().c_str());
    std::abort();
  }
  if (snapshot(watch, watch_size) != before) std::abort();
  return 0;
}
