// Entries that other hooking libraries' tests hook, for hook_entry_test.cpp.
// Global, typed and sized so that function_containing() finds them.
#include "asm_function.inc"
        .intel_syntax noprefix
        .text

// `movabs rax, imm64; ret` (11 bytes, then int3 padding): the 16-byte absolute
// entry steals all of it and the padding.
TARGET hook_target_movabs
        movabs rax, 0x1122334455667788
        ret
END hook_target_movabs

// A short jump at the entry over bytes that are still the function's: x + 5.
TARGET hook_target_jmp8
        jmp 1f
        ud2
        ud2
        ud2
1:      lea rax, [rdi + 5]
        ret
END hook_target_jmp8

// A direct call as the only stolen instruction; the callee reads its return address.
TARGET hook_target_call_first
        call hook_return_address_probe
        ret
END hook_target_call_first

// The same through a pointer: `call [rip+slot]` is the last stolen instruction.
TARGET hook_target_call_slot
        call qword ptr [rip + hook_probe_slot]
        ret
END hook_target_call_slot

// `call [rsp+8]` as the last stolen instruction: a push before it would move
// the operand, so no out-of-line copy can run it (never called).
TARGET hook_target_call_stack
        call qword ptr [rsp + 8]
        ret
END hook_target_call_stack

// 2x + 1, for the install-publishes-the-original test.
TARGET hook_target_twice
        lea rax, [rdi + rdi]
        add rax, 1
        ret
END hook_target_twice

        .data
        .p2align 3
hook_probe_slot:
        .quad hook_return_address_probe

        .section .note.GNU-stack, "", @progbits
