// Helpers for serialize_test.cpp that C++ cannot express: a caller whose red
// zone holds data while signal handlers run, and a call made with chosen
// flags and stack alignment.
        .text

// int punch_test_red_zone_kept(const volatile int* stop, volatile int* filled)
// Fills the 128-byte red zone below its rsp with a pattern, sets *filled = 1,
// spins until *stop != 0 (signals are handled on this thread meanwhile), then
// returns 1 if every byte of the pattern is still there, else 0. A leaf: it
// keeps nothing else on the stack.
        .globl punch_test_red_zone_kept
        .type punch_test_red_zone_kept, @function
punch_test_red_zone_kept:
        .cfi_startproc
        endbr64
        movabsq $0x5a17c3e00d15ea5e, %rax
        movq $-128, %rcx
1:      movq %rax, (%rsp,%rcx)
        xorq %rcx, (%rsp,%rcx)          // Each qword different: pattern ^ offset.
        addq $8, %rcx
        jnz 1b
        movl $1, (%rsi)
2:      pause
        cmpl $0, (%rdi)
        je 2b
        movq $-128, %rcx
3:      movq %rax, %rdx
        xorq %rcx, %rdx
        cmpq %rdx, (%rsp,%rcx)
        jne 4f
        addq $8, %rcx
        jnz 3b
        movl $1, %eax
        ret
4:      xorl %eax, %eax
        ret
        .cfi_endproc
        .size punch_test_red_zone_kept, .-punch_test_red_zone_kept

// uint64_t punch_test_call_with_flags(void (*fn)(), uint64_t set_flags, uint64_t misalign)
// Calls fn with `set_flags` OR-ed into rflags and its stack `misalign` bytes
// (0 or 8) off the ABI's alignment, and returns rflags as fn left them. The
// bits it set are cleared again before it returns. Checks that fn gives back
// rsp exactly: returns 0 when it did not.
        .globl punch_test_call_with_flags
        .type punch_test_call_with_flags, @function
punch_test_call_with_flags:
        .cfi_startproc
        endbr64
        pushq %rbx
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %rbx, 0
        pushq %r12
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r12, 0
        pushq %r13
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r13, 0
        movq %rsp, %rbx                 // 16-byte aligned here.
        .cfi_def_cfa_register %rbx
        subq %rdx, %rsp
        movq %rsp, %r12                 // What fn must give back.
        movq %rsi, %r13
        pushfq
        orq %r13, (%rsp)
        popfq
        call *%rdi
        pushfq
        popq %rax                       // Flags as fn left them.
        notq %r13
        pushfq
        andq %r13, (%rsp)
        popfq                           // DF and the others cleared again.
        cmpq %r12, %rsp
        je 1f
        xorl %eax, %eax
1:      movq %rbx, %rsp
        .cfi_def_cfa_register %rsp
        popq %r13
        .cfi_adjust_cfa_offset -8
        popq %r12
        .cfi_adjust_cfa_offset -8
        popq %rbx
        .cfi_adjust_cfa_offset -8
        ret
        .cfi_endproc
        .size punch_test_call_with_flags, .-punch_test_call_with_flags

        .section .note.GNU-stack,"",@progbits
