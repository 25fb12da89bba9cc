/* The interface every board port implements (firmware/boards/<board>/). The application
 * (firmware/app/main.c) and ccore are board-independent; a port provides only these functions. */
#ifndef TINYLLS_BOARD_H
#define TINYLLS_BOARD_H

#include <stdint.h>
#include "tinylls.h"

/* Clocks, serial port (8N1, the port's documented baud rate), counter. Called once. */
void board_init(void);
/* Copies up to max bytes already received into buf and returns how many (0 if none). Never blocks. */
int32_t board_uart_read(uint8_t *buf, int32_t max);
/* Sends n bytes; returns when they are queued in the UART. */
void board_uart_write(const uint8_t *data, int32_t n);
/* Sleeps until something may have happened (an interrupt), or returns at once. */
void board_idle(void);
/* Free-running counter (wraps at 2^32) and what it counts: TL_PROTO_COUNTER_INSN (emulator,
 * retired instructions) or TL_PROTO_COUNTER_CYCLES (DWT->CYCCNT and friends on real chips). */
uint32_t board_counter(void);
uint32_t board_counter_kind(void);
/* Bytes of RAM this firmware leaves unused (between the end of static data and the stack). */
uint32_t board_free_ram(void);
/* Most stack bytes ever in use since boot (the port paints the stack at reset and finds the deepest
 * overwritten word), or 0 when the port does not measure it. Reported by INFO. */
uint32_t board_stack_used(void);
const char *board_name(void);
/* The NOR flash region kept for checkpoints (tinylls_api.h, tl_flash: erase a sector, program
 * within a page, read; the region's own offsets), or NULL when the board has none: then CHECKPOINT
 * is refused and nothing is restored at boot. Called once, after board_init. */
const tl_flash *board_flash(void);

#endif /* TINYLLS_BOARD_H */
