/* Reset and vector table for the MPS2 AN386 (Cortex-M4F) as emulated by QEMU. */
#include <stdint.h>

extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end, __stack_top;
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
    uint32_t *src = &__data_load, *dst = &__data_start;
    while (dst < &__data_end)
        *dst++ = *src++;
    for (dst = &__bss_start; dst < &__bss_end; dst++)
        *dst = 0;
    board_exit(main());
}

void Default_Handler(void)
{
    board_exit(0x7E);
}

/* A fault must not hang CI: leave QEMU with a distinctive exit status instead. */
void HardFault_Handler(void)
{
    board_exit(0x7F);
}
