/* RAM set-up at reset and the memory figures INFO reports, for the bare-metal ports (ram.h). */
#include <stdint.h>

#include "board.h"
#include "ram.h"

extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end, __stack_top, __stack_limit;

#define STACK_PAINT 0xA5A5A5A5u

void ram_init(void)
{
    uint32_t *src = &__data_load, *dst = &__data_start;
    while (dst < &__data_end)
        *dst++ = *src++;
    for (dst = &__bss_start; dst < &__bss_end; dst++)
        *dst = 0;
    /* Paint the reserve up to 64 bytes below this frame (a local's address marks it): the frames
     * of this function and of the reset handler that called it live above that margin. */
    uint32_t here = 0;
    const uintptr_t top = (uintptr_t)&here - 64u;
    for (dst = &__stack_limit; (uintptr_t)dst < top; dst++)
        *(volatile uint32_t *)dst = STACK_PAINT;
}

uint32_t board_free_ram(void)
{
    return (uint32_t)((uintptr_t)&__stack_limit - (uintptr_t)&__bss_end);
}

/* The lowest word of the reserve that no longer holds the paint is the deepest the stack (main
 * code and interrupts alike) has reached. If even the last word changed, the reserve was
 * exhausted: the full reserve is reported (a lower bound). */
uint32_t board_stack_used(void)
{
    const uint32_t *p = &__stack_limit;
    while (p < &__stack_top && *p == STACK_PAINT)
        p++;
    return (uint32_t)((uintptr_t)&__stack_top - (uintptr_t)p);
}
