/* Reset and vector table for the MPS2 AN386 (Cortex-M4F) as emulated by QEMU. */
#include <stdint.h>

#include "../baremetal/ram.h"

extern uint32_t __stack_top;
extern int main(void);
void Reset_Handler(void);
void Default_Handler(void);
void HardFault_Handler(void);
void SysTick_Handler(void);
void UART0RX_Handler(void);
void board_exit(int code);

typedef void (*vector_fn)(void);

__attribute__((section(".vectors"), used)) static const vector_fn vectors[16 + 32] = {
    (vector_fn)(uintptr_t)&__stack_top,
    Reset_Handler,
    Default_Handler,      /* NMI */
    HardFault_Handler,
    HardFault_Handler,    /* MemManage */
    HardFault_Handler,    /* BusFault */
    HardFault_Handler,    /* UsageFault */
    0, 0, 0, 0,
    Default_Handler,      /* SVC */
    Default_Handler,      /* DebugMon */
    0,
    Default_Handler,      /* PendSV */
    SysTick_Handler,
    UART0RX_Handler,      /* IRQ 0: UART0 RX */
};

void Reset_Handler(void)
{
    /* FPU on before any code that might use it (CPACR CP10/CP11 full access). ccore has no
     * float, but newlib or board code may. */
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;
    __asm volatile("dsb\n isb" ::: "memory");
    ram_init();
    board_exit(main());
}

void Default_Handler(void)
{
    board_exit(0x7E);
}

/* A fault must not hang CI: leave QEMU with a distinctive exit status instead. One exception: the
 * checkpoint flash probe (flash.c) makes a semihosting call that, in a QEMU started without
 * -semihosting-config, is a BKPT with no debugger and escalates here: that call returns -1 (r0 in
 * the stacked frame) and execution goes on after the BKPT. */
extern volatile uint32_t g_semihost_probing;
void hardfault_c(uint32_t *frame);

__attribute__((naked)) void HardFault_Handler(void)
{
    __asm volatile(
        "tst lr, #4\n"
        "ite eq\n"
        "mrseq r0, msp\n"
        "mrsne r0, psp\n"
        "b hardfault_c\n");
}

void hardfault_c(uint32_t *frame)
{
    const uint16_t *pc = (const uint16_t *)(uintptr_t)frame[6];
    if (g_semihost_probing && *pc == 0xBEABu) {    /* bkpt 0xab */
        frame[0] = 0xFFFFFFFFu;
        frame[6] += 2u;
        return;                                     /* lr still holds EXC_RETURN */
    }
    board_exit(0x7F);
}
