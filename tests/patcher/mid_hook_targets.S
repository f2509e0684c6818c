// Functions for the mid hook tests. Each has a local label `.Lname_site`, an
// instruction inside it, whose address mid_sites.name (below) exports.
#include "asm_function.inc"
        .intel_syntax noprefix
        .text

// (x + 1) * 3 + 5. At the site rax == x + 1.
TARGET mid_target_add
        mov rax, rdi
        add rax, 1
.Ladd_site:
        lea rax, [rax + rax * 2]
        add rax, 5
        ret
END mid_target_add

// 2 when x < 10, else 1: the cmp is before the site, its jcc after.
TARGET mid_target_flags
        cmp rdi, 10
.Lflags_site:
        mov eax, 1
        jl .Lless
        ret
.Lless:
        mov eax, 2
        ret
END mid_target_flags

// Stores every general register but rsp into out[16] (encoding order: rax,
// rcx, rdx, rbx, -, rbp, rsi, rdi, r8..r15); before the site each holds
// its index * 0x1111 (rdi holds out). long f(long* out), returns 0.
TARGET mid_target_registers
        push rbx
        push rbp
        push r12
        push r13
        push r14
        push r15
        mov rax, 0x0000
        mov rcx, 0x1111
        mov rdx, 0x2222
        mov rbx, 0x3333
        mov rbp, 0x5555
        mov rsi, 0x6666
        mov r8, 0x8888
        mov r9, 0x9999
        mov r10, 0xaaaa
        mov r11, 0xbbbb
        mov r12, 0xcccc
        mov r13, 0xdddd
        mov r14, 0xeeee
        mov r15, 0xffff
.Lregisters_site:
        nop dword ptr [rax + rax * 1 + 0]
        mov [rdi + 0 * 8], rax
        mov [rdi + 1 * 8], rcx
        mov [rdi + 2 * 8], rdx
        mov [rdi + 3 * 8], rbx
        mov [rdi + 5 * 8], rbp
        mov [rdi + 6 * 8], rsi
        mov [rdi + 7 * 8], rdi
        mov [rdi + 8 * 8], r8
        mov [rdi + 9 * 8], r9
        mov [rdi + 10 * 8], r10
        mov [rdi + 11 * 8], r11
        mov [rdi + 12 * 8], r12
        mov [rdi + 13 * 8], r13
        mov [rdi + 14 * 8], r14
        mov [rdi + 15 * 8], r15
        pop r15
        pop r14
        pop r13
        pop r12
        pop rbp
        pop rbx
        xor eax, eax
        ret
END mid_target_registers

// Hooked at its entry, where rsp % 16 == 8 (the site is the function's first instruction): x + 2.
TARGET mid_target_entry
.Lentry_site:
        lea rax, [rdi + 2]
        ret
END mid_target_entry

// Hooked after a push (rsp % 16 == 0 at the site): x + 3.
TARGET mid_target_pushed
        push rbx
.Lpushed_site:
        lea rax, [rdi + 3]
        pop rbx
        ret
END mid_target_pushed

// A leaf function keeping data in its red zone across the site: 2x + 7.
TARGET mid_target_red_zone
        mov [rsp - 8], rdi
        mov qword ptr [rsp - 64], 7
        mov [rsp - 128], rdi
.Lred_zone_site:
        mov rax, [rsp - 8]
        add rax, [rsp - 64]
        add rax, [rsp - 128]
        ret
END mid_target_red_zone

// trunc(x + 3.0) through xmm0 += xmm1 twice (xmm1 == 1.5 at the site).
TARGET mid_target_xmm
        cvtsi2sd xmm0, rdi
        mov rax, 0x3ff8000000000000
        movq xmm1, rax
.Lxmm_site:
        addsd xmm0, xmm1
        addsd xmm0, xmm1
        cvttsd2si rax, xmm0
        ret
END mid_target_xmm

// x, read back from the upper half of ymm2 after the site (AVX2 only).
TARGET mid_target_ymm
        vmovq xmm2, rdi
        vpbroadcastq ymm2, xmm2
.Lymm_site:
        vextracti128 xmm3, ymm2, 1
        vmovq rax, xmm3
        vzeroupper
        ret
END mid_target_ymm

// 1000 pushed last; the site pops it: returns 1000, or x when the detour pops first (rsp += 8).
TARGET mid_target_stack
        push rbp
        mov rbp, rsp
        push rdi
        push 1000
.Lstack_site:
        pop rax
        mov rsp, rbp
        pop rbp
        ret
END mid_target_stack

// 2x + x (loop of x iterations adding 2, x >= 1); the loop head lies 4 bytes
// after the site, inside the bytes a jump there would replace: refused.
TARGET mid_target_loop
        mov rax, rdi
.Lloop_site:
        add rax, 0
.Lloop_head:
        add rax, 2
        dec rdi
        jnz .Lloop_head
        ret
END mid_target_loop

// x * 4 + 1; mid_target_jumper jumps to its second instruction from outside.
TARGET mid_target_entered
.Lentered_site:
        mov rax, rdi
.Lentered_inside:
        shl rax, 2
        add rax, 1
        ret
END mid_target_entered

TARGET mid_target_jumper
        mov rdi, 0
        xor eax, eax
        jmp .Lentered_inside
END mid_target_jumper

// getpid() + x: the site is the syscall, which cannot run elsewhere (a thread
// inside it resumes at the original address): refused.
TARGET mid_target_syscall
        mov eax, 39
.Lsyscall_site:
        syscall
        add rax, rdi
        ret
END mid_target_syscall
// A jump table (x & 1): the site is its `jmp rax`, and the first case right
// after it would be stolen with it (the jump could land inside the hook's
// jump): refused as unprovable. Never called.
TARGET mid_target_switch
        and edi, 1
        lea rdx, [rip + .Lswitch_table]
        movsxd rax, dword ptr [rdx + rdi * 4]
        add rax, rdx
.Lswitch_site:
        jmp rax
.Lswitch_case0:
        mov eax, 10
        ret
.Lswitch_case1:
        mov eax, 20
        ret
END mid_target_switch
        .section .rodata
        .p2align 2
.Lswitch_table:
        .long .Lswitch_case0 - .Lswitch_table, .Lswitch_case1 - .Lswitch_table
        .text
        .p2align 4, 0xcc

        .section .data.rel.ro, "aw"
        .p2align 3
        .globl mid_sites
mid_sites:
        .quad .Ladd_site, .Lflags_site, .Lregisters_site, .Lentry_site, .Lpushed_site, .Lred_zone_site
        .quad .Lxmm_site, .Lymm_site, .Lstack_site, .Lloop_site, .Lentered_site, .Lloop_head, .Lsyscall_site
        .quad .Lswitch_site

        .section .note.GNU-stack, "", @progbits
