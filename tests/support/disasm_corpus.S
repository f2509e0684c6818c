// Tricky function entries for the disasm and hook tests (see disasm_corpus.hpp).
// Every case is a global function with a type and a size, so that
// runtime::function_containing finds it through dladdr1 (the test binaries export
// their symbols). Callable cases follow the SysV ABI: long f(long x).
        .intel_syntax noprefix

        .section .data
        .p2align 4
.Lcorpus_data:
        .quad 42, 7, 0x1122334455667788, 3
.Lcorpus_scratch:
        .quad 0, 0
        .section .rodata
        .p2align 3
.Lcorpus_double:
        .quad 0x4045000000000000          // 42.0
        .quad 0
.Lcorpus_table:
        .long .Lcase0 - .Lcorpus_table, .Lcase1 - .Lcorpus_table
        .long .Lcase2 - .Lcorpus_table, .Lcase3 - .Lcorpus_table

        .text
        .macro CORPUS name
        .p2align 4, 0xcc
        .globl \name
        .type \name, @function
\name:
        .endm
        .macro END name
        .size \name, . - \name
        .endm

// endbr64 then a classic frame: returns x + 1.
CORPUS corpus_endbr_frame
        endbr64
        push rbp
        mov rbp, rsp
        lea rax, [rdi + 1]
        pop rbp
        ret
END corpus_endbr_frame

// Frame with a local: returns x + 2.
CORPUS corpus_classic_frame
        push rbp
        mov rbp, rsp
        sub rsp, 16
        mov [rbp - 8], rdi
        mov rax, [rbp - 8]
        add rax, 2
        leave
        ret
END corpus_classic_frame

// RIP-relative load: returns 42 + x.
CORPUS corpus_rip_load
        mov rax, qword ptr [rip + .Lcorpus_data]
        add rax, rdi
        ret
END corpus_rip_load

// RIP-relative lea: returns 7 + x.
CORPUS corpus_rip_lea
        lea rax, [rip + .Lcorpus_data]
        mov rax, [rax + 8]
        add rax, rdi
        ret
END corpus_rip_lea

// RIP-relative compare with an imm8 after the displacement: returns 1 (data is 42).
CORPUS corpus_rip_cmp_imm8
        cmp dword ptr [rip + .Lcorpus_data], 42
        sete al
        movzx eax, al
        ret
END corpus_rip_cmp_imm8

// RIP-relative compare with an imm32 after the displacement: returns 1.
CORPUS corpus_rip_cmp_imm32
        cmp qword ptr [rip + .Lcorpus_data + 16], 0x55667788
        setl al
        movzx eax, al
        ret
END corpus_rip_cmp_imm32

// RIP-relative store of an immediate: returns x, writes 0x55 to scratch.
CORPUS corpus_rip_store_imm
        mov dword ptr [rip + .Lcorpus_scratch], 0x55
        mov rax, rdi
        ret
END corpus_rip_store_imm

// SSE RIP-relative load: returns 42.0's bits + x.
CORPUS corpus_sse_rip
        movq xmm0, qword ptr [rip + .Lcorpus_double]
        movq rax, xmm0
        add rax, rdi
        ret
END corpus_sse_rip

// SSE with an imm8 after the displacement: returns the low dword of the data, 42.
CORPUS corpus_sse_rip_imm
        pshufd xmm0, xmmword ptr [rip + .Lcorpus_data], 0xe4
        movd eax, xmm0
        ret
END corpus_sse_rip_imm

// AVX (VEX) RIP-relative load: needs AVX to run; returns 42.0's bits + x.
CORPUS corpus_avx_rip
        vmovq xmm0, qword ptr [rip + .Lcorpus_double]
        vmovq rax, xmm0
        add rax, rdi
        ret
END corpus_avx_rip

// AVX (VEX) with an imm8 after the displacement.
CORPUS corpus_avx_rip_imm
        vpshufd xmm0, xmmword ptr [rip + .Lcorpus_data], 0x1b
        vmovd eax, xmm0
        ret
END corpus_avx_rip_imm

// AVX-512 (EVEX) RIP-relative load: decoded and relocated, not run.
CORPUS corpus_evex_rip
        vmovdqu64 xmm16, xmmword ptr [rip + .Lcorpus_data]
        vmovq rax, xmm16
        ret
END corpus_evex_rip

// Short jmp out of the run: returns x + 1.
CORPUS corpus_jmp_short
        mov rax, rdi
        jmp 1f
        ud2
1:      add rax, 1
        ret
END corpus_jmp_short

// Short jcc out of the run, all 16 conditions: returns cond(cmp x, 5) ? 1 : 0.
        .irp cc, o, no, b, ae, e, ne, be, a, s, ns, p, np, l, ge, le, g
CORPUS corpus_j\cc
        cmp rdi, 5
        j\cc 1f
        xor eax, eax
        ret
1:      mov eax, 1
        ret
END corpus_j\cc
        .endr

// jrcxz whose target is outside the run: returns x == 0 ? 7 : 3.
CORPUS corpus_jrcxz_out
        mov rcx, rdi
        jrcxz 1f
        mov eax, 3
        ret
1:      mov eax, 7
        ret
END corpus_jrcxz_out

// jrcxz whose target is inside the run: returns x == 0 ? 0 : 1.
CORPUS corpus_jrcxz_in
        xor eax, eax
        mov rcx, rdi
        jrcxz 1f
        inc eax
1:      ret
END corpus_jrcxz_in

// loop back to an instruction inside the run: returns x (for 1 <= x <= 1000).
CORPUS corpus_loop_in
        xor eax, eax
        mov rcx, rdi
1:      inc rax
        loop 1b
        ret
END corpus_loop_in

// loop whose target is outside the run: returns x == 1 ? 0 : 5.
CORPUS corpus_loop_out
        mov rcx, rdi
        mov eax, 5
        loop 1f
        xor eax, eax
1:      ret
END corpus_loop_out

// loop after the run that jumps back into it (strictly inside the first 5
// bytes): returns x (for 1 <= x <= 1000).
CORPUS corpus_loop_back
        xor eax, eax
        mov ecx, edi
1:      inc rax
        loop 1b
        ret
END corpus_loop_back

// call as the last instruction of the run: returns x + 5.
CORPUS corpus_call_last
        call .Lcorpus_helper
        add rax, 1
        ret
END corpus_call_last

// call followed by more instructions of the run: refused.
CORPUS corpus_call_mid
        call .Lcorpus_helper
        add rax, 1
        ret
END corpus_call_mid

        .p2align 4, 0xcc
.Lcorpus_helper:                        // rax = x + 4
        lea rax, [rdi + 4]
        ret

// call-next/pop PIC idiom: returns the address of its own second instruction.
CORPUS corpus_call_next_pop
        call 1f
1:      pop rax
        ret
END corpus_call_next_pop

// 10-byte mov r64, imm64: returns 0x1122334455667788 + x.
CORPUS corpus_mov_imm64
        movabs rax, 0x1122334455667788
        add rax, rdi
        ret
END corpus_mov_imm64

// A back edge into the first bytes: returns max(x, 1) for x <= 1000.
CORPUS corpus_back_edge
        xor eax, eax
1:      inc rax
        cmp rax, rdi
        jl 1b
        ret
END corpus_back_edge

// Tiny function followed by int3 padding (5 bytes of code): returns x + 1.
CORPUS corpus_tiny_padded
        lea rax, [rdi + 1]
        ret
END corpus_tiny_padded
        .p2align 4, 0xcc

// Tiny functions without padding: 1 byte, then the next function right away.
CORPUS corpus_tiny_ret
        ret
END corpus_tiny_ret
        .globl corpus_tiny_next
        .type corpus_tiny_next, @function
corpus_tiny_next:                       // returns x
        mov rax, rdi
        ret
END corpus_tiny_next

// Jump table: an indirect jump the branch scan cannot prove safe. Returns 10 * (x & 3).
CORPUS corpus_jump_table
        and edi, 3
        lea rdx, [rip + .Lcorpus_table]
        movsxd rax, dword ptr [rdx + rdi * 4]
        add rax, rdx
        jmp rax
.Lcase0: mov eax, 0
        ret
.Lcase1: mov eax, 10
        ret
.Lcase2: mov eax, 20
        ret
.Lcase3: mov eax, 30
        ret
END corpus_jump_table

// syscall in the run (getpid): refused.
CORPUS corpus_syscall
        mov eax, 39
        syscall
        ret
END corpus_syscall

// A branch of the run into the middle of another instruction of the run: refused.
CORPUS corpus_jmp_into_insn
        .byte 0xeb, 0x01                 // jmp to the second byte of the next instruction
        .byte 0xb8, 0x48, 0x89, 0xf8, 0xc3 // mov eax, 0xc3f88948 / (from +1) mov rax, rdi; ret
END corpus_jmp_into_insn

// A run crossing a page boundary: the first instruction straddles it. Returns 42 + x.
        .p2align 12, 0xcc
        .skip 4093, 0xcc
        .globl corpus_page_cross
        .type corpus_page_cross, @function
corpus_page_cross:
        mov rax, qword ptr [rip + .Lcorpus_data]
        add rax, rdi
        ret
END corpus_page_cross

        .section .note.GNU-stack, "", @progbits
