/* Reset and vector table for the STM32F746 (Cortex-M7), written for tinylls (no vendor startup
 * code): FPU on, .data copied from flash, .bss zeroed, the stack reserve painted, main(). */
#include <stdint.h>

#include "../baremetal/ram.h"

#include "stm32f746.h"

extern uint32_t __stack_top;
extern int main(void);
void Reset_Handler(void);
void Default_Handler(void);
void HardFault_Handler(void);
void USART1_IRQHandler(void);
void board_exit(int code);

typedef void (*vector_fn)(void);

/* 16 system exceptions + the F746's 98 interrupt positions (RM0385 table 40); the port enables
 * only USART1. Unused positions go to Default_Handler. */
__attribute__((section(".vectors"), used)) static const vector_fn vectors[16 + STM32F746_IRQS] = {
    [0] = (vector_fn)(uintptr_t)&__stack_top,
    [1] = Reset_Handler,
    [2] = Default_Handler,      /* NMI */
    [3] = HardFault_Handler,
    [4] = HardFault_Handler,    /* MemManage */
    [5] = HardFault_Handler,    /* BusFault */
    [6] = HardFault_Handler,    /* UsageFault */
    [11] = Default_Handler,     /* SVCall */
    [12] = Default_Handler,     /* DebugMonitor */
    [14] = Default_Handler,     /* PendSV */
    [15] = Default_Handler,     /* SysTick */
    [16 + USART1_IRQN] = USART1_IRQHandler,
};

void Reset_Handler(void)
{
    /* CP10/CP11 full access before any floating point instruction (ccore has none) */
    SCB_CPACR |= 0xFu << 20;
    __asm volatile("dsb\n isb" ::: "memory");
    ram_init();
    board_exit(main());
}

void Default_Handler(void)
{
    board_exit(0x7E);
}

void HardFault_Handler(void)
{
    board_exit(0x7F);
}
