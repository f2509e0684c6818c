// libFuzzer: relocate arbitrary bytes near and far; whatever relocate accepts
// must behave the same as the original when both run in Unicorn.
// Input: byte 0 picks near (even) or far (odd); the rest is the run at A.
// Out of scope, and counted: runs the emulator cannot finish (faults, endless
// loops), runs that write into their own code pages (self-modifying code: the
// original would execute rewritten bytes at A, the copy at B its own), runs
// whose original touches the copy's pages (fresh memory to it; see Layout and
// out_of_scope in differential.hpp), and the instructions not_comparable lists below.
#include <Zydis/Zydis.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <punch/disasm/relocate.hpp>
#include <punch/disasm/validate.hpp>

#include "../tests/disasm/differential.hpp"

namespace {

constexpr std::uint64_t kA = 0x555555554000;

// Not comparable: x87 environment stores record the address of the last x87
// instruction (position-dependent by design, documented); `enter` with a
// nesting level gave different stack bytes for identical bytes at A and B in
// Unicorn 2.0.1 (an emulator effect: the instruction does not read rip);
// counters and random numbers differ from run to run. Privileged instructions
// fault in a user-space process, but Unicorn runs at CPL0 and emulates them:
// writes to control and debug registers crashed Unicorn 2.0.1 itself. Unicorn
// has no RTM and runs `xbegin rel32` (c7 f8) as `mov eax, imm32`: the rel32
// differs between A and B by construction.
bool not_comparable(punch::disasm::CodeSpan source, const std::vector<punch::disasm::Instruction>& insns) {
  static const ZydisDecoder decoder = [] {
    ZydisDecoder d;
    ZydisDecoderInit(&d, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
    return d;
  }();
  for (const auto& i : insns) {
    ZydisDecodedInstruction z;
    const std::size_t offset = i.address - source.address;
    if (!ZYAN_SUCCESS(ZydisDecoderDecodeInstruction(&decoder, nullptr, source.bytes.data() + offset,
                                                    source.bytes.size() - offset, &z)) ||
        (z.attributes & ZYDIS_ATTRIB_IS_PRIVILEGED))
      return true;
    switch (z.mnemonic) {
      case ZYDIS_MNEMONIC_FNSTENV:
      case ZYDIS_MNEMONIC_FNSAVE:
      case ZYDIS_MNEMONIC_FXSAVE:
      case ZYDIS_MNEMONIC_FXSAVE64:
      case ZYDIS_MNEMONIC_XSAVE:
      case ZYDIS_MNEMONIC_XSAVE64:
      case ZYDIS_MNEMONIC_XSAVEOPT:
      case ZYDIS_MNEMONIC_XSAVEOPT64:
      case ZYDIS_MNEMONIC_XSAVEC:
      case ZYDIS_MNEMONIC_XSAVEC64:
      case ZYDIS_MNEMONIC_XSAVES:
      case ZYDIS_MNEMONIC_XSAVES64:
      case ZYDIS_MNEMONIC_ENTER:
      case ZYDIS_MNEMONIC_XBEGIN:
      case ZYDIS_MNEMONIC_RDTSC:
      case ZYDIS_MNEMONIC_RDTSCP:
      case ZYDIS_MNEMONIC_RDRAND:  // not deterministic
      case ZYDIS_MNEMONIC_RDSEED:
      case ZYDIS_MNEMONIC_RDPMC:
      case ZYDIS_MNEMONIC_RDPID: return true;
      default: break;
    }
  }
  return false;
}

// What happened to the inputs, printed when the fuzzer exits: proof that most
// accepted inputs are really compared, not skipped.
struct Tally {
  unsigned long refused = 0, not_comparable = 0, original_failed = 0, wrote_code = 0, into_copy = 0, compared = 0;
  ~Tally() {
    std::fprintf(stderr,
                 "fuzz_relocate: %lu compared; out of scope: %lu refused by relocate, %lu wrote their own "
                 "code, %lu touched the copy's range, %lu did not finish in the emulator, %lu not "
                 "comparable (position-dependent, non-deterministic or privileged)\n",
                 compared, refused, wrote_code, into_copy, original_failed, not_comparable);
  }
} tally;

// FNV-1a: each input gets its own register state, the same on every run.
std::uint64_t seed_of(const std::uint8_t* data, std::size_t size) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::size_t i = 0; i < size; ++i) h = (h ^ data[i]) * 0x100000001b3ull;
  return h;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2 || size > 64) return 0;
  const bool far = data[0] & 1;
  const std::vector<std::uint8_t> bytes(data + 1, data + size);
  const punch::disasm::CodeSpan source{kA, bytes};
  const std::uint64_t destination = far ? kA + (3ull << 30) : kA + 0x10000;
  auto relocation = punch::disasm::relocate(source, destination);
  auto bound = punch::disasm::relocated_size_bound(source);
  if (!relocation) {
    if (relocation.error().message.empty()) std::abort();  // Every refusal says why.
    ++tally.refused;
    return 0;
  }
  if (!bound || relocation->bytes.size() > *bound) std::abort();
  auto insns = punch::disasm::decode_all(source);
  if (!insns) std::abort();  // relocate accepted bytes that do not decode.
  if (not_comparable(source, *insns)) {
    ++tally.not_comparable;
    return 0;
  }

  punch::test::Layout layout;
  layout.a = kA;
  layout.original = bytes;
  layout.b = destination;
  layout.relocated = relocation->bytes;
  std::mt19937_64 rng(seed_of(data, size));
  const auto state = punch::test::random_state(rng, kA - 0x3000, 0x1000);
  const auto original = punch::test::emulate(layout, kA, kA, kA + bytes.size(), state, 500);
  const std::uint64_t copy_end = destination + relocation->bytes.size();
  if (!punch::test::out_of_scope(original, destination, copy_end).empty()) {
    ++(original.wrote_code                           ? tally.wrote_code
       : original.touched_copy || original.completed ? tally.into_copy
                                                     : tally.original_failed);
    return 0;
  }
  ++tally.compared;
  const auto moved = punch::test::emulate(layout, destination, destination, copy_end, state, 5000);
  const std::string diff = punch::test::compare(original, moved, kA + bytes.size(), copy_end);
  if (!diff.empty()) {
    std::fprintf(stderr, "relocation %s differs: %s\n  original at %s:  %s\n  relocated to %s: %s\n",
                 far ? "far" : "near", diff.c_str(), punch::test::hex(kA).c_str(), punch::test::hex_dump(bytes).c_str(),
                 punch::test::hex(destination).c_str(), punch::test::hex_dump(relocation->bytes).c_str());
    std::abort();
  }
  return 0;
}
