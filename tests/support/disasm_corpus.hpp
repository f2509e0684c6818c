// The disasm corpus: tricky function entries written in assembly
// (disasm_corpus.S), shared by the disasm tests and the hook tests.
//
// Each case is an exported function with an ELF size, so runtime::function_containing()
// finds it when the test binary exports its symbols (ENABLE_EXPORTS).
#pragma once

#include <cstddef>
#include <span>

extern "C" {
// clang-format off
#define PUNCH_CORPUS_FUNCTIONS(X)                                                                     \
  X(corpus_endbr_frame) X(corpus_classic_frame) X(corpus_rip_load) X(corpus_rip_lea)                  \
  X(corpus_rip_cmp_imm8) X(corpus_rip_cmp_imm32) X(corpus_rip_store_imm) X(corpus_sse_rip)            \
  X(corpus_sse_rip_imm) X(corpus_avx_rip) X(corpus_avx_rip_imm) X(corpus_evex_rip) X(corpus_jmp_short) \
  X(corpus_jo) X(corpus_jno) X(corpus_jb) X(corpus_jae) X(corpus_je) X(corpus_jne) X(corpus_jbe)      \
  X(corpus_ja) X(corpus_js) X(corpus_jns) X(corpus_jp) X(corpus_jnp) X(corpus_jl) X(corpus_jge)       \
  X(corpus_jle) X(corpus_jg) X(corpus_jrcxz_out) X(corpus_jrcxz_in) X(corpus_loop_in)                 \
  X(corpus_loop_out) X(corpus_loop_back) X(corpus_call_last) X(corpus_call_mid)                       \
  X(corpus_call_next_pop) X(corpus_mov_imm64) X(corpus_back_edge) X(corpus_tiny_padded)               \
  X(corpus_tiny_ret) X(corpus_tiny_next) X(corpus_jump_table) X(corpus_syscall)                       \
  X(corpus_jmp_into_insn) X(corpus_page_cross)
// clang-format on
#define PUNCH_CORPUS_DECLARE(name) long name(long);
PUNCH_CORPUS_FUNCTIONS(PUNCH_CORPUS_DECLARE)
#undef PUNCH_CORPUS_DECLARE
}

namespace punch::test {

//! What a case needs: how much of its entry a patch covers, and what should happen.
struct CorpusCase {
  const char* name;
  long (*function)(long);  //!< The entry. Call it only when `callable`.
  std::size_t run;         //!< Bytes from the entry that a 5-byte patch covers (instruction boundaries).
  bool relocatable;        //!< relocate() of those `run` bytes to a nearby address succeeds.
  bool callable;           //!< Runs on any x86-64 (no AVX/AVX-512) as long f(long x) for 1 <= x <= 100.
  bool branch_into_run;    //!< A branch later in the function lands strictly inside the run.
  bool indirect_jump;      //!< The function has an indirect jump (the branch scan cannot prove it safe).
};

//! Every case of the corpus.
std::span<const CorpusCase> disasm_corpus();

}  // namespace punch::test
