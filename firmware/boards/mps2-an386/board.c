/* Board port: ARM MPS2 AN386 (Cortex-M4F) under qemu-system-arm -M mps2-an386.
 *
 * UART0 is a CMSDK APB UART at 0x40004000, received by interrupt into a ring buffer. Its RX
 * interrupt (IRQ 0) fires only for a byte that arrives while RXIE is set, so when the ring is full
 * RXIE is masked (QEMU then holds further bytes back) and the RX register is polled once more
 * after unmasking. The counter is SysTick on the 25 MHz processor clock: under
 * `-icount shift=0` every instruction advances virtual time by 1 ns, so one tick is
 * TL_FW_INSN_PER_TICK (40) instructions and the count is deterministic.
 * Exit: semihosting SYS_EXIT_EXTENDED (needs -semihosting-config enable=on,target=native).
 */
#include "board.h"
#include "tinylls.h"
#include "tl_proto_api.h"

#define REG(a) (*(volatile uint32_t *)(a))
#define UART0_BASE 0x40004000u
#define UART_DATA REG(UART0_BASE + 0x0)
#define UART_STATE REG(UART0_BASE + 0x4)      /* bit0 TX full, bit1 RX full */
#define UART_CTRL REG(UART0_BASE + 0x8)       /* bit0 TX en, bit1 RX en, bit3 RX irq en */
#define UART_INTSTATUS REG(UART0_BASE + 0xC)  /* write 1 to clear */
#define UART_BAUDDIV REG(UART0_BASE + 0x10)
#define UART_RXIE 0x8u

#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define NVIC_ISER0 REG(0xE000E100u)

#ifndef TL_FW_INSN_PER_TICK
#define TL_FW_INSN_PER_TICK 40u   /* 1 GHz virtual instruction clock / 25 MHz SysTick clock */
#endif
#define RING_BYTES 64u            /* power of two; RXIE flow control makes any size safe (a full
                                     ring holds the sender back, nothing is lost), and the main
                                     loop drains it far faster than the link fills it */

static volatile uint8_t g_ring[RING_BYTES];
static volatile uint32_t g_head, g_tail;    /* head: written by the ISR; tail: by the main loop */
static volatile uint32_t g_systick_wraps;

void board_exit(int code)
{
    volatile uint32_t block[2];             /* on the stack: exiting is never the deepest point */
    block[0] = 0x20026u;                    /* ADP_Stopped_ApplicationExit */
    block[1] = (uint32_t)code;
    register uint32_t r0 __asm("r0") = 0x20u;  /* SYS_EXIT_EXTENDED */
    register volatile uint32_t *r1 __asm("r1") = block;
    __asm volatile("bkpt 0xab" : : "r"(r0), "r"(r1) : "memory");
    for (;;)
        __asm volatile("wfi");
}

static int ring_full(void)
{
    return g_head - g_tail >= RING_BYTES;
}

void UART0RX_Handler(void)
{
    UART_INTSTATUS = 0x2u;
    while (UART_STATE & 0x2u) {
        if (ring_full()) {
            UART_CTRL &= ~UART_RXIE;        /* main loop re-enables it once it made room */
            return;
        }
        g_ring[g_head % RING_BYTES] = (uint8_t)UART_DATA;
        g_head++;
    }
}

void SysTick_Handler(void)
{
    g_systick_wraps++;
}

void board_init(void)
{
    UART_BAUDDIV = 16;
    UART_CTRL = 0x1u | 0x2u | UART_RXIE;
    NVIC_ISER0 = 1u << 0;
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 0x7u;                        /* enable, interrupt, processor clock */
    while (SYST_CVR == 0)                   /* VAL reads 0 until the first reload from RVR */
        ;
}

int32_t board_uart_read(uint8_t *buf, int32_t max)
{
    int32_t n = 0;
    while (n < max && g_tail != g_head) {
        buf[n++] = g_ring[g_tail % RING_BYTES];
        g_tail++;
    }
    if (!(UART_CTRL & UART_RXIE) && !ring_full()) {
        __asm volatile("cpsid i" ::: "memory");
        UART_CTRL |= UART_RXIE;
        /* a byte that arrived while RXIE was masked raises no interrupt: take it here */
        while ((UART_STATE & 0x2u) && !ring_full()) {
            g_ring[g_head % RING_BYTES] = (uint8_t)UART_DATA;
            g_head++;
        }
        __asm volatile("cpsie i" ::: "memory");
    }
    return n;
}

void board_uart_write(const uint8_t *data, int32_t n)
{
    for (int32_t i = 0; i < n; i++) {
        while (UART_STATE & 0x1u)
            ;
        UART_DATA = data[i];
    }
}

void board_idle(void)
{
    __asm volatile("cpsid i" ::: "memory");
    if (g_tail == g_head && (UART_CTRL & UART_RXIE))
        __asm volatile("wfi");              /* a pending IRQ still wakes WFI with PRIMASK set */
    __asm volatile("cpsie i" ::: "memory");
}

uint32_t board_counter(void)
{
    uint32_t wraps, val;
    do {
        wraps = g_systick_wraps;
        val = SYST_CVR;
    } while (wraps != g_systick_wraps);
    /* SysTick counts down from 0xFFFFFF; a wrap pending in the ISR shows as a small val with
     * COUNTFLAG set: re-reading after the ISR ran (the loop above) keeps the pair consistent. */
    uint32_t ticks = (wraps << 24) + (0xFFFFFFu - val);
    return ticks * TL_FW_INSN_PER_TICK;
}

uint32_t board_counter_kind(void)
{
    return TL_PROTO_COUNTER_INSN;
}

const char *board_name(void)
{
    return "mps2-an386";
}

int main(void)
{
    extern int tinylls_app_main(void);
    return tinylls_app_main();
}
