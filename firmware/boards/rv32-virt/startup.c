/* Reset for rv32-virt (qemu-system-riscv32 -M virt -bios none): QEMU starts hart 0 in machine
 * mode at 0x80000000, where the linker puts _start (.text.start). No gp relaxation is used, so gp
 * is not set up. */
#include <stdint.h>

#include "../baremetal/ram.h"

extern int main(void);
void board_exit(int code);
void reset_c(void);
void trap_handler(void);

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
    ram_init();
    board_exit(main());
}

/* Interrupts are never enabled (mstatus.MIE stays 0: WFI is woken through mie.MEIE alone), so any
 * trap is an exception - an illegal instruction, a misaligned or faulting access: leave QEMU with a
 * distinctive status instead of hanging CI. */
__attribute__((aligned(4))) void trap_handler(void)
{
    board_exit(0x7F);
}
