/* A shared library (built by gcc and by clang for branch_index_test.cpp)
 * whose functions tail-jump into the middle of their neighbours' first bytes,
 * as glibc's __mempcpy_* jumps to memmove+3. No scan of the neighbour alone
 * sees those jumps.
 *
 *   tj_victim(x)     = x + 3: lea (3 bytes), add (3 bytes), ret. A 5-byte
 *                      hook jump would steal both instructions.
 *   tj_neighbour(x)  = 2x + 2: doubles x into eax, then jumps to the add.
 *   tj_victim_cet(x) = x + 3 after an endbr64; tj_neighbour_cet jumps to its add.
 *   tj_victim_deep(x)= x + 10 in four adds; tj_neighbour_deep jumps to the
 *                      fourth (+9): outside a 5-byte jump's stolen bytes, inside
 *                      a 16-byte absolute entry's.
 *   tj_data_victim(x)= x, with a frame (sub rsp; mov; add rsp; ret); just
 *                      before it, data in the code of tj_data_holder that
 *                      decodes as `js` into the middle of its `sub rsp, 8`
 *                      (no code branches there; the sweep cannot tell).
 *   tj_plain(x)      = 3x + 1, ordinary compiled code (a hook must not be refused). */
__asm__(
    ".text\n"
    ".globl tj_victim\n .type tj_victim, @function\n .p2align 4\n"
    "tj_victim:\n"
    "  leal 1(%rdi), %eax\n"
    ".Ltj_victim_body:\n"
    "  addl $2, %eax\n"
    "  ret\n"
    ".size tj_victim, .-tj_victim\n"

    ".globl tj_neighbour\n .type tj_neighbour, @function\n .p2align 4\n"
    "tj_neighbour:\n"
    "  leal (%rdi,%rdi), %eax\n"
    "  jmp .Ltj_victim_body\n"
    ".size tj_neighbour, .-tj_neighbour\n"

    ".globl tj_victim_cet\n .type tj_victim_cet, @function\n .p2align 4\n"
    "tj_victim_cet:\n"
    "  endbr64\n"
    "  leal 1(%rdi), %eax\n"
    ".Ltj_victim_cet_body:\n"
    "  addl $2, %eax\n"
    "  ret\n"
    ".size tj_victim_cet, .-tj_victim_cet\n"

    ".globl tj_neighbour_cet\n .type tj_neighbour_cet, @function\n .p2align 4\n"
    "tj_neighbour_cet:\n"
    "  endbr64\n"
    "  leal (%rdi,%rdi), %eax\n"
    "  jmp .Ltj_victim_cet_body\n"
    ".size tj_neighbour_cet, .-tj_neighbour_cet\n"

    ".globl tj_victim_deep\n .type tj_victim_deep, @function\n .p2align 4\n"
    "tj_victim_deep:\n"
    "  leal 1(%rdi), %eax\n"
    "  addl $2, %eax\n"
    "  addl $3, %eax\n"
    ".Ltj_victim_deep_body:\n"
    "  addl $4, %eax\n"
    "  ret\n"
    "  .byte 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc\n" /* room for a 16-byte entry */
    ".size tj_victim_deep, .-tj_victim_deep\n"

    ".globl tj_neighbour_deep\n .type tj_neighbour_deep, @function\n .p2align 4\n"
    "tj_neighbour_deep:\n"
    "  leal (%rdi,%rdi), %eax\n"
    "  jmp .Ltj_victim_deep_body\n"
    ".size tj_neighbour_deep, .-tj_neighbour_deep\n"

    ".globl tj_data_holder\n .type tj_data_holder, @function\n .p2align 4\n"
    "tj_data_holder:\n"
    "  movl %edi, %eax\n"
    "  ret\n"
    "  .byte 0x78, .Ltj_data_victim + 2 - (. + 1)\n" /* "x" and an offset: `js` into the sub's ModRM */
    ".size tj_data_holder, .-tj_data_holder\n"

    ".globl tj_data_victim\n .type tj_data_victim, @function\n .p2align 4\n"
    "tj_data_victim:\n"
    ".Ltj_data_victim:\n"
    "  subq $8, %rsp\n"
    "  movl %edi, %eax\n"
    "  addq $8, %rsp\n"
    "  ret\n"
    ".size tj_data_victim, .-tj_data_victim\n");

int tj_plain(int x) { return 3 * x + 1; }
