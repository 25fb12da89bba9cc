/* The RAM chores every bare-metal port (mps2-an386, rv32-virt, disco_f746ng) shares, written once
 * in ram.c; the ports' linker scripts define __data_load/_start/_end, __bss_start/_end and the
 * stack reserve [__stack_limit, __stack_top). The board.h functions board_free_ram and
 * board_stack_used are defined there too. */
#ifndef TINYLLS_BAREMETAL_RAM_H
#define TINYLLS_BAREMETAL_RAM_H

/* The C run-time's RAM at reset, before main: .data copied from flash, .bss zeroed, and the stack
 * reserve below the caller painted, so that board_stack_used can find the deepest word the stack
 * ever reached. Call it first thing from the reset handler (nothing static is valid before). */
void ram_init(void);

#endif /* TINYLLS_BAREMETAL_RAM_H */
