/* Board port: ST STM32F746G-DISCO (Cortex-M7), register level: no HAL, no CMSIS, no framework.
 * Registers from RM0385 (stm32f746.h); built offline by PlatformIO's local platform (env
 * disco_f746ng) with Debian's arm-none-eabi-gcc.
 *
 * Clock: HSI 16 MHz -> PLL (M 8, N 216, P 2) = 216 MHz SYSCLK with over-drive, voltage scale 1,
 * 7 flash wait states + ART accelerator + prefetch (RM0385 3.3.2 table 5); AHB 216 MHz, APB1
 * 54 MHz, APB2 108 MHz. L1 instruction and data caches on.
 * Serial: USART1 on PA9 (TX) / PB7 (RX), AF7, which the on-board ST-LINK exposes as a USB virtual
 * COM port (/dev/ttyACM0); 115200 8N1, received by interrupt into a ring buffer.
 * Counter: DWT->CYCCNT (CPU cycles). Stack: painted at reset, deepest word reported by INFO.
 */
#include "board.h"
#include "stm32f746.h"
#include "tinylls.h"
#include "tl_proto_api.h"

#define SYSCLK_HZ 216000000u
#define APB2_HZ (SYSCLK_HZ / 2u)   /* USART1 kernel clock (DCKCFGR2.USART1SEL = APB2) */
#define BAUD 115200u
#define RING_BYTES 4096u           /* power of two; a real UART cannot be held back like QEMU's */

static volatile uint8_t g_ring[RING_BYTES];
static volatile uint32_t g_head, g_tail;

/* Nothing to return to on a real board: stop here (a debugger sees the code in r0). */
void board_exit(int code)
{
    (void)code;
    __asm volatile("cpsid i" ::: "memory");
    for (;;)
        __asm volatile("wfi");
}

static void clock_216mhz(void)
{
    RCC_CR |= RCC_CR_HSION;
    while (!(RCC_CR & RCC_CR_HSIRDY))
        ;
    RCC_APB1ENR |= RCC_APB1ENR_PWREN;
    (void)RCC_APB1ENR;                              /* read back: the clock is on before PWR is used */
    PWR_CR1 |= PWR_CR1_VOS_SCALE1;
    RCC_PLLCFGR = (8u << RCC_PLLCFGR_PLLM_POS) | (216u << RCC_PLLCFGR_PLLN_POS)
                  | (0u << RCC_PLLCFGR_PLLP_POS) | (9u << RCC_PLLCFGR_PLLQ_POS);  /* source HSI */
    RCC_CR |= RCC_CR_PLLON;
    /* over-drive (RM0385 4.1.4): enable, wait, switch, wait - needed above 180 MHz */
    PWR_CR1 |= PWR_CR1_ODEN;
    while (!(PWR_CSR1 & PWR_CSR1_ODRDY))
        ;
    PWR_CR1 |= PWR_CR1_ODSWEN;
    while (!(PWR_CSR1 & PWR_CSR1_ODSWRDY))
        ;
    while (!(RCC_CR & RCC_CR_PLLRDY))
        ;
    FLASH_ACR = (7u << FLASH_ACR_LATENCY_POS) | FLASH_ACR_PRFTEN | FLASH_ACR_ARTEN;
    while ((FLASH_ACR & 0xFu) != 7u)
        ;
    RCC_CFGR = (RCC_CFGR & ~(RCC_CFGR_HPRE_MASK | RCC_CFGR_PPRE1_MASK | RCC_CFGR_PPRE2_MASK | RCC_CFGR_SW_MASK))
               | RCC_CFGR_PPRE1_DIV4 | RCC_CFGR_PPRE2_DIV2 | RCC_CFGR_SW_PLL;
    while ((RCC_CFGR & RCC_CFGR_SWS_MASK) != RCC_CFGR_SWS_PLL)
        ;
}

/* ARMv7-M ARM B2.2.7: invalidate, then enable, the L1 caches (Cortex-M7: data cache lines of 32
 * bytes, set index from bit 5, way index from bit 30). */
static void caches_on(void)
{
    __asm volatile("dsb\n isb" ::: "memory");
    SCB_ICIALLU = 0;
    __asm volatile("dsb\n isb" ::: "memory");
    SCB_CCR |= SCB_CCR_IC;
    __asm volatile("dsb\n isb" ::: "memory");

    SCB_CSSELR = 0;                                 /* level 1 data cache */
    __asm volatile("dsb" ::: "memory");
    uint32_t ccsidr = SCB_CCSIDR;
    uint32_t sets = (ccsidr >> 13) & 0x7FFFu;       /* NumSets - 1 */
    uint32_t ways = (ccsidr >> 3) & 0x3FFu;         /* Associativity - 1 */
    for (uint32_t s = 0; s <= sets; s++)
        for (uint32_t w = 0; w <= ways; w++)
            SCB_DCISW = (s << 5) | (w << 30);
    __asm volatile("dsb" ::: "memory");
    SCB_CCR |= SCB_CCR_DC;
    __asm volatile("dsb\n isb" ::: "memory");
}

void USART1_IRQHandler(void)
{
    if (USART1_ISR & USART_ISR_ORE)
        USART1_ICR = USART_ICR_ORECF;               /* bytes lost: the protocol's CRC/retry recovers */
    while (USART1_ISR & USART_ISR_RXNE) {
        uint8_t b = (uint8_t)USART1_RDR;
        if (g_head - g_tail < RING_BYTES) {
            g_ring[g_head % RING_BYTES] = b;
            g_head++;
        }
    }
}

void board_init(void)
{
    clock_216mhz();
    caches_on();
    /* PA9 = USART1_TX, PB7 = USART1_RX: alternate function 7, RX pulled up */
    RCC_AHB1ENR |= RCC_AHB1ENR_GPIOAEN | RCC_AHB1ENR_GPIOBEN;
    RCC_APB2ENR |= RCC_APB2ENR_USART1EN;
    (void)RCC_APB2ENR;
    __asm volatile("dsb" ::: "memory");
    GPIO_MODER(GPIOA_BASE) = (GPIO_MODER(GPIOA_BASE) & ~(3u << (9 * 2))) | (2u << (9 * 2));
    GPIO_OSPEEDR(GPIOA_BASE) |= 2u << (9 * 2);
    GPIO_AFRH(GPIOA_BASE) = (GPIO_AFRH(GPIOA_BASE) & ~(0xFu << ((9 - 8) * 4))) | (7u << ((9 - 8) * 4));
    GPIO_MODER(GPIOB_BASE) = (GPIO_MODER(GPIOB_BASE) & ~(3u << (7 * 2))) | (2u << (7 * 2));
    GPIO_PUPDR(GPIOB_BASE) = (GPIO_PUPDR(GPIOB_BASE) & ~(3u << (7 * 2))) | (1u << (7 * 2));
    GPIO_AFRL(GPIOB_BASE) = (GPIO_AFRL(GPIOB_BASE) & ~(0xFu << (7 * 4))) | (7u << (7 * 4));
    RCC_DCKCFGR2 &= ~RCC_DCKCFGR2_USART1SEL_MASK;
    USART1_CR1 = 0;
    USART1_CR2 = 0;                                 /* 1 stop bit */
    USART1_CR3 = 0;
    USART1_BRR = (APB2_HZ + BAUD / 2u) / BAUD;      /* 8 data bits, no parity, oversampling 16 */
    USART1_CR1 = USART_CR1_TE | USART_CR1_RE | USART_CR1_RXNEIE | USART_CR1_UE;
    NVIC_ISER(USART1_IRQN / 32u) = 1u << (USART1_IRQN % 32u);
    /* cycle counter */
    DEMCR |= DEMCR_TRCENA;
    DWT_LAR = 0xC5ACCE55u;
    DWT_CYCCNT = 0;
    DWT_CTRL |= DWT_CTRL_CYCCNTENA;
}

int32_t board_uart_read(uint8_t *buf, int32_t max)
{
    int32_t n = 0;
    while (n < max && g_tail != g_head) {
        buf[n++] = g_ring[g_tail % RING_BYTES];
        g_tail++;
    }
    return n;
}

void board_uart_write(const uint8_t *data, int32_t n)
{
    for (int32_t i = 0; i < n; i++) {
        while (!(USART1_ISR & USART_ISR_TXE))
            ;
        USART1_TDR = data[i];
    }
}

void board_idle(void)
{
    __asm volatile("cpsid i" ::: "memory");
    if (g_tail == g_head)
        __asm volatile("wfi");                      /* a pending IRQ wakes WFI with PRIMASK set */
    __asm volatile("cpsie i" ::: "memory");
}

uint32_t board_counter(void)
{
    return DWT_CYCCNT;
}

uint32_t board_counter_kind(void)
{
    return TL_PROTO_COUNTER_CYCLES;
}

const char *board_name(void)
{
    return "disco_f746ng";
}

int main(void)
{
    extern int tinylls_app_main(void);
    return tinylls_app_main();
}
