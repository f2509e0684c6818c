// Functions with known entries for the hook tests. Global, typed and sized
// so that function_containing() finds them. SysV ABI: long f(long x).
#include "asm_function.inc"
        .intel_syntax noprefix
        .text

// A multi-instruction prologue after endbr64 (push/mov/lea stolen): returns 3x + 7.
TARGET hook_target_prologue
        endbr64
        push rbp
        mov rbp, rsp
        lea rax, [rdi + rdi * 2]
        add rax, 7
        pop rbp
        ret
END hook_target_prologue

// No endbr64, multi-instruction prologue: returns x * x - 1.
TARGET hook_target_square
        mov rax, rdi
        imul rax, rdi
        sub rax, 1
        ret
END hook_target_square

// clang -fpatchable-function-entry=5 / -mfentry -mnop-mcount: one 5-byte nop. Returns x + 100.
TARGET hook_target_pad_nop5
        .byte 0x0f, 0x1f, 0x44, 0x00, 0x00
        lea rax, [rdi + 100]
        ret
END hook_target_pad_nop5

// gcc -fcf-protection -fpatchable-function-entry=5: endbr64 then five 1-byte nops. Returns x + 200.
TARGET hook_target_pad_gcc
        endbr64
        nop
        nop
        nop
        nop
        nop
        lea rax, [rdi + 200]
        ret
END hook_target_pad_gcc

// An indirect call that would not be the last stolen instruction: refused (never called).
TARGET hook_target_call_mid
        xor eax, eax
        call rsi
        mov rax, rdi
        ret
END hook_target_call_mid

// Loads the quadword at [x] and adds 1. The load is stolen into the trampoline,
// so a thread can be held inside the trampoline by a fault on that load.
TARGET hook_target_load
        mov rax, qword ptr [rdi]
        add rax, 1
        ret
END hook_target_load

// A detour that can park a thread inside itself: sets hook_parking_arrived,
// spins until hook_parking_go is non-zero, then returns
// hook_parking_original(x) + 1000 (the trampoline pointer is loaded only after the spin).
TARGET hook_parking_detour
        mov byte ptr [rip + hook_parking_arrived], 1
.Lspin:
        pause
        cmp byte ptr [rip + hook_parking_go], 0
        je .Lspin
        sub rsp, 8
        call qword ptr [rip + hook_parking_original]
        add rsp, 8
        add rax, 1000
        ret
END hook_parking_detour

        .data
        .p2align 3
        .globl hook_parking_original, hook_parking_arrived, hook_parking_go
hook_parking_original:
        .quad 0
hook_parking_arrived:
        .byte 0
hook_parking_go:
        .byte 0

        .section .note.GNU-stack, "", @progbits
