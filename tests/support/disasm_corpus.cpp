// The table of disasm_corpus.S cases (see disasm_corpus.hpp).
#include "disasm_corpus.hpp"

namespace punch::test {

std::span<const CorpusCase> disasm_corpus() {
  // name, function, run, relocatable, callable, branch_into_run, indirect_jump
  static const CorpusCase cases[] = {
      {"endbr_frame", corpus_endbr_frame, 5, true, true, false, false},
      {"classic_frame", corpus_classic_frame, 8, true, true, false, false},
      {"rip_load", corpus_rip_load, 7, true, true, false, false},
      {"rip_lea", corpus_rip_lea, 7, true, true, false, false},
      {"rip_cmp_imm8", corpus_rip_cmp_imm8, 7, true, true, false, false},
      {"rip_cmp_imm32", corpus_rip_cmp_imm32, 11, true, true, false, false},
      {"rip_store_imm", corpus_rip_store_imm, 10, true, true, false, false},
      {"sse_rip", corpus_sse_rip, 8, true, true, false, false},
      {"sse_rip_imm", corpus_sse_rip_imm, 9, true, true, false, false},
      {"avx_rip", corpus_avx_rip, 8, true, false, false, false},
      {"avx_rip_imm", corpus_avx_rip_imm, 9, true, false, false, false},
      {"evex_rip", corpus_evex_rip, 10, true, false, false, false},
      {"jmp_short", corpus_jmp_short, 5, true, true, false, false},
      {"jo", corpus_jo, 6, true, true, false, false},
      {"jno", corpus_jno, 6, true, true, false, false},
      {"jb", corpus_jb, 6, true, true, false, false},
      {"jae", corpus_jae, 6, true, true, false, false},
      {"je", corpus_je, 6, true, true, false, false},
      {"jne", corpus_jne, 6, true, true, false, false},
      {"jbe", corpus_jbe, 6, true, true, false, false},
      {"ja", corpus_ja, 6, true, true, false, false},
      {"js", corpus_js, 6, true, true, false, false},
      {"jns", corpus_jns, 6, true, true, false, false},
      {"jp", corpus_jp, 6, true, true, false, false},
      {"jnp", corpus_jnp, 6, true, true, false, false},
      {"jl", corpus_jl, 6, true, true, false, false},
      {"jge", corpus_jge, 6, true, true, false, false},
      {"jle", corpus_jle, 6, true, true, false, false},
      {"jg", corpus_jg, 6, true, true, false, false},
      {"jrcxz_out", corpus_jrcxz_out, 5, true, true, false, false},
      {"jrcxz_in", corpus_jrcxz_in, 10, true, true, false, false},
      {"loop_in", corpus_loop_in, 10, true, true, false, false},
      {"loop_out", corpus_loop_out, 10, true, true, false, false},
      {"loop_back", corpus_loop_back, 7, true, true, true, false},
      {"call_last", corpus_call_last, 5, true, true, false, false},
      {"call_mid", corpus_call_mid, 9, false, true, false, false},
      {"call_next_pop", corpus_call_next_pop, 6, true, true, false, false},
      {"mov_imm64", corpus_mov_imm64, 10, true, true, false, false},
      {"back_edge", corpus_back_edge, 5, true, true, true, false},
      {"tiny_padded", corpus_tiny_padded, 5, true, true, false, false},
      {"tiny_ret", corpus_tiny_ret, 1, true, true, false, false},
      {"tiny_next", corpus_tiny_next, 4, true, true, false, false},
      {"jump_table", corpus_jump_table, 10, true, true, false, true},
      {"syscall", corpus_syscall, 7, false, true, false, false},
      {"jmp_into_insn", corpus_jmp_into_insn, 7, false, true, false, false},
      {"page_cross", corpus_page_cross, 7, true, true, false, false},
  };
  return cases;
}

}  // namespace punch::test
