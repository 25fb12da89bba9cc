/* Board port: ST STM32F746G-DISCO (Cortex-M7 at 180 MHz), built by PlatformIO (env disco_f746ng,
 * framework stm32cube for the startup code, linker script and CMSIS device header only; no HAL
 * calls). NOT built or run in CI: PlatformIO's toolchain and framework packages come from its
 * registry. Written against RM0385 (STM32F75xxx/74xxx reference manual); see firmware/README.md.
 *
 * Serial: USART1 on PA9 (TX) / PB7 (RX), which the on-board ST-LINK exposes as a USB virtual COM
 * port (/dev/ttyACM0), 115200 8N1, received by interrupt into a ring buffer.
 * Counter: DWT->CYCCNT (CPU cycles).
 */
#include "stm32f7xx.h"

#include "board.h"
#include "tinylls.h"
#include "tl_proto_api.h"

#define SYSCLK_HZ 180000000u      /* HSI 16 MHz / M 8 * N 180 / P 2; no over-drive needed */
#define APB2_HZ (SYSCLK_HZ / 2)   /* USART1 clock */
#define BAUD 115200u
#define RING_BYTES 4096u

static volatile uint8_t g_ring[RING_BYTES];
static volatile uint32_t g_head, g_tail;

static void clock_180mhz(void)
{
    RCC->APB1ENR |= RCC_APB1ENR_PWREN;
    PWR->CR1 |= PWR_CR1_VOS;                                   /* voltage scale 1 */
    RCC->PLLCFGR = (8u << RCC_PLLCFGR_PLLM_Pos) | (180u << RCC_PLLCFGR_PLLN_Pos)
                   | (0u << RCC_PLLCFGR_PLLP_Pos)              /* P = 2 */
                   | (8u << RCC_PLLCFGR_PLLQ_Pos);             /* source HSI (PLLSRC = 0) */
    RCC->CR |= RCC_CR_PLLON;
    while (!(RCC->CR & RCC_CR_PLLRDY))
        ;
    FLASH->ACR = FLASH_ACR_LATENCY_5WS | FLASH_ACR_PRFTEN | FLASH_ACR_ARTEN;
    RCC->CFGR = (RCC->CFGR & ~(RCC_CFGR_HPRE | RCC_CFGR_PPRE1 | RCC_CFGR_PPRE2 | RCC_CFGR_SW))
                | RCC_CFGR_PPRE1_DIV4 | RCC_CFGR_PPRE2_DIV2 | RCC_CFGR_SW_PLL;
    while ((RCC->CFGR & RCC_CFGR_SWS) != RCC_CFGR_SWS_PLL)
        ;
    SystemCoreClock = SYSCLK_HZ;
}

void USART1_IRQHandler(void)
{
    uint32_t isr = USART1->ISR;
    if (isr & USART_ISR_ORE)
        USART1->ICR = USART_ICR_ORECF;      /* bytes lost: the protocol's CRC/retry recovers */
    while (USART1->ISR & USART_ISR_RXNE) {
        uint8_t b = (uint8_t)USART1->RDR;
        if (g_head - g_tail < RING_BYTES) {
            g_ring[g_head % RING_BYTES] = b;
            g_head++;
        }
    }
}

void board_init(void)
{
    clock_180mhz();
    SCB_EnableICache();
    SCB_EnableDCache();
    /* PA9 = USART1_TX, PB7 = USART1_RX, alternate function 7 */
    RCC->AHB1ENR |= RCC_AHB1ENR_GPIOAEN | RCC_AHB1ENR_GPIOBEN;
    RCC->APB2ENR |= RCC_APB2ENR_USART1EN;
    __DSB();
    GPIOA->MODER = (GPIOA->MODER & ~(3u << (9 * 2))) | (2u << (9 * 2));
    GPIOA->AFR[1] = (GPIOA->AFR[1] & ~(0xFu << ((9 - 8) * 4))) | (7u << ((9 - 8) * 4));
    GPIOB->MODER = (GPIOB->MODER & ~(3u << (7 * 2))) | (2u << (7 * 2));
    GPIOB->AFR[0] = (GPIOB->AFR[0] & ~(0xFu << (7 * 4))) | (7u << (7 * 4));
    USART1->BRR = (APB2_HZ + BAUD / 2) / BAUD;
    USART1->CR1 = USART_CR1_TE | USART_CR1_RE | USART_CR1_RXNEIE | USART_CR1_UE;
    NVIC_EnableIRQ(USART1_IRQn);
    /* cycle counter */
    CoreDebug->DEMCR |= CoreDebug_DEMCR_TRCENA_Msk;
    DWT->LAR = 0xC5ACCE55u;
    DWT->CYCCNT = 0;
    DWT->CTRL |= DWT_CTRL_CYCCNTENA_Msk;
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
        while (!(USART1->ISR & USART_ISR_TXE))
            ;
        USART1->TDR = data[i];
    }
}

void board_idle(void)
{
    __disable_irq();
    if (g_tail == g_head)
        __WFI();
    __enable_irq();
}

uint32_t board_counter(void)
{
    return DWT->CYCCNT;
}

uint32_t board_counter_kind(void)
{
    return TL_PROTO_COUNTER_CYCLES;
}

uint32_t board_free_ram(void)
{
    extern uint32_t _end;                    /* end of static data (ST linker scripts) */
    return __get_MSP() - (uint32_t)(uintptr_t)&_end;
}

/* Not measured on this port yet (its startup code is ST's): INFO reports 0. */
uint32_t board_stack_used(void)
{
    return 0;
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
