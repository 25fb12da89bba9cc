/* Reset for rv32-virt (qemu-system-riscv32 -M virt -bios none): QEMU starts hart 0 in machine
 * mode at 0x80000000, where the linker puts _start (.text.start). No gp relaxation is used, so gp
 * is not set up. */
#include <stdint.h>

extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end, __stack_top, __stack_limit;
extern int main(void);
void board_exit(int code);
void reset_c(void);
void trap_handler(void);

#define STACK_PAINT 0xA5A5A5A5u     /* also in board.c */

__attribute__((naked, section(".text.start"))) void _start(void)
{
    __asm volatile(
        "la sp, __stack_top\n"
        "la t0, trap_handler\n"
        ".option push\n.option arch, +zicsr\n"
        "csrw mtvec, t0\n"
        ".option pop\n"              /* direct mode: every trap goes to trap_handler */
        "j reset_c\n");
}

void reset_c(void)
{
    uint32_t *src = &__data_load, *dst = &__data_start;
    while (dst < &__data_end)
        *dst++ = *src++;
    for (dst = &__bss_start; dst < &__bss_end; dst++)
        *dst = 0;
    /* Paint the stack reserve below this frame (board_stack_used finds the deepest word that
     * changed). 64 bytes of margin: this function's own frame lives just below the reset SP. */
    uint32_t sp;
    __asm volatile("mv %0, sp" : "=r"(sp));
    for (dst = &__stack_limit; (uint32_t)(uintptr_t)dst < sp - 64u; dst++)
        *dst = STACK_PAINT;
    board_exit(main());
}

/* Interrupts are never enabled (mstatus.MIE stays 0: WFI is woken through mie.MEIE alone), so any
 * trap is an exception - an illegal instruction, a misaligned or faulting access: leave QEMU with a
 * distinctive status instead of hanging CI. */
__attribute__((aligned(4))) void trap_handler(void)
{
    board_exit(0x7F);
}
