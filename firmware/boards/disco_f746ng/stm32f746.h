/* The few STM32F746 registers the tinylls port uses, written from RM0385 (STM32F75xxx/74xxx
 * reference manual, rev. 8) and the ARMv7-M Architecture Reference Manual. Offsets and bit
 * positions are the manuals'; nothing here comes from ST's or Arm's headers. */
#ifndef TINYLLS_STM32F746_H
#define TINYLLS_STM32F746_H

#include <stdint.h>

#define REG(addr) (*(volatile uint32_t *)(addr))

/* RM0385 5.3 RCC (base 0x4002 3800) */
#define RCC_BASE 0x40023800u
#define RCC_CR REG(RCC_BASE + 0x00u)
#define RCC_CR_HSION (1u << 0)
#define RCC_CR_HSIRDY (1u << 1)
#define RCC_CR_PLLON (1u << 24)
#define RCC_CR_PLLRDY (1u << 25)
#define RCC_PLLCFGR REG(RCC_BASE + 0x04u)
#define RCC_PLLCFGR_PLLM_POS 0          /* [5:0] VCO input = source / M */
#define RCC_PLLCFGR_PLLN_POS 6          /* [14:6] VCO = input * N */
#define RCC_PLLCFGR_PLLP_POS 16         /* [17:16] 0: /2 */
#define RCC_PLLCFGR_PLLSRC_HSE (1u << 22)
#define RCC_PLLCFGR_PLLQ_POS 24         /* [27:24] */
#define RCC_CFGR REG(RCC_BASE + 0x08u)
#define RCC_CFGR_SW_MASK (3u << 0)
#define RCC_CFGR_SW_PLL (2u << 0)
#define RCC_CFGR_SWS_MASK (3u << 2)
#define RCC_CFGR_SWS_PLL (2u << 2)
#define RCC_CFGR_HPRE_MASK (0xFu << 4)  /* 0xxx: AHB = SYSCLK */
#define RCC_CFGR_PPRE1_MASK (7u << 10)
#define RCC_CFGR_PPRE1_DIV4 (5u << 10)
#define RCC_CFGR_PPRE2_MASK (7u << 13)
#define RCC_CFGR_PPRE2_DIV2 (4u << 13)
#define RCC_AHB1ENR REG(RCC_BASE + 0x30u)
#define RCC_AHB1ENR_GPIOAEN (1u << 0)
#define RCC_AHB1ENR_GPIOBEN (1u << 1)
#define RCC_APB1ENR REG(RCC_BASE + 0x40u)
#define RCC_APB1ENR_PWREN (1u << 28)
#define RCC_APB2ENR REG(RCC_BASE + 0x44u)
#define RCC_APB2ENR_USART1EN (1u << 4)
#define RCC_DCKCFGR2 REG(RCC_BASE + 0x90u)
#define RCC_DCKCFGR2_USART1SEL_MASK (3u << 0)   /* 00: APB2 clock */

/* RM0385 4.4 PWR (base 0x4000 7000) */
#define PWR_BASE 0x40007000u
#define PWR_CR1 REG(PWR_BASE + 0x00u)
#define PWR_CR1_VOS_SCALE1 (3u << 14)
#define PWR_CR1_ODEN (1u << 16)
#define PWR_CR1_ODSWEN (1u << 17)
#define PWR_CSR1 REG(PWR_BASE + 0x04u)
#define PWR_CSR1_ODRDY (1u << 16)
#define PWR_CSR1_ODSWRDY (1u << 17)

/* RM0385 3.7 embedded flash interface (base 0x4002 3C00) */
#define FLASH_ACR REG(0x40023C00u)
#define FLASH_ACR_LATENCY_POS 0         /* [3:0] wait states */
#define FLASH_ACR_PRFTEN (1u << 8)
#define FLASH_ACR_ARTEN (1u << 9)
/* RM0385 3.7: embedded flash interface (single bank, 1 MB: sectors 0-3 32 KB, 4 128 KB, 5-7 256 KB) */
#define FLASH_KEYR REG(0x40023C04u)
#define FLASH_KEY1 0x45670123u
#define FLASH_KEY2 0xCDEF89ABu
#define FLASH_SR REG(0x40023C0Cu)
#define FLASH_SR_EOP (1u << 0)
#define FLASH_SR_OPERR (1u << 1)
#define FLASH_SR_WRPERR (1u << 4)
#define FLASH_SR_PGAERR (1u << 5)
#define FLASH_SR_PGPERR (1u << 6)
#define FLASH_SR_ERSERR (1u << 7)
#define FLASH_SR_BSY (1u << 16)
#define FLASH_SR_ERRORS (FLASH_SR_OPERR | FLASH_SR_WRPERR | FLASH_SR_PGAERR | FLASH_SR_PGPERR | FLASH_SR_ERSERR)
#define FLASH_CR REG(0x40023C10u)
#define FLASH_CR_PG (1u << 0)
#define FLASH_CR_SER (1u << 1)
#define FLASH_CR_SNB_POS 3                  /* [6:3] sector number */
#define FLASH_CR_PSIZE_X32 (2u << 8)        /* parallelism x32: 2.7-3.6 V (the DISCO's 3.3 V) */
#define FLASH_CR_STRT (1u << 16)
#define FLASH_CR_LOCK (1u << 31)

/* RM0385 6.4 GPIO (port A 0x4002 0000, port B 0x4002 0400) */
#define GPIOA_BASE 0x40020000u
#define GPIOB_BASE 0x40020400u
#define GPIO_MODER(port) REG((port) + 0x00u)        /* 2 bits per pin, 10: alternate function */
#define GPIO_OSPEEDR(port) REG((port) + 0x08u)
#define GPIO_PUPDR(port) REG((port) + 0x0Cu)        /* 01: pull-up */
#define GPIO_AFRL(port) REG((port) + 0x20u)         /* pins 0-7, 4 bits each */
#define GPIO_AFRH(port) REG((port) + 0x24u)         /* pins 8-15 */

/* RM0385 31.8 USART (USART1 base 0x4001 1000) */
#define USART1_BASE 0x40011000u
#define USART1_CR1 REG(USART1_BASE + 0x00u)
#define USART_CR1_UE (1u << 0)
#define USART_CR1_RE (1u << 2)
#define USART_CR1_TE (1u << 3)
#define USART_CR1_RXNEIE (1u << 5)
#define USART1_CR2 REG(USART1_BASE + 0x04u)
#define USART1_CR3 REG(USART1_BASE + 0x08u)
#define USART1_BRR REG(USART1_BASE + 0x0Cu)         /* oversampling by 16: USARTDIV = f_ck / baud */
#define USART1_ISR REG(USART1_BASE + 0x1Cu)
#define USART_ISR_ORE (1u << 3)
#define USART_ISR_RXNE (1u << 5)
#define USART_ISR_TXE (1u << 7)
#define USART1_ICR REG(USART1_BASE + 0x20u)
#define USART_ICR_ORECF (1u << 3)
#define USART1_RDR REG(USART1_BASE + 0x24u)
#define USART1_TDR REG(USART1_BASE + 0x28u)
#define USART1_IRQN 37u                              /* RM0385 table 40 (vector table position 37) */
#define STM32F746_IRQS 98u                           /* positions 0..97 */

/* ARMv7-M system control space */
#define NVIC_ISER(n) REG(0xE000E100u + 4u * (n))
#define SCB_CCR REG(0xE000ED14u)
#define SCB_CCR_DC (1u << 16)
#define SCB_CCR_IC (1u << 17)
#define SCB_CCSIDR REG(0xE000ED80u)                 /* cache size id of the level CSSELR selects */
#define SCB_CSSELR REG(0xE000ED84u)
#define SCB_CPACR REG(0xE000ED88u)
#define SCB_ICIALLU REG(0xE000EF50u)                /* invalidate all instruction caches */
#define SCB_DCISW REG(0xE000EF60u)                  /* invalidate data cache line by set/way */
#define SCB_DCIMVAC REG(0xE000EF5Cu)                /* invalidate data cache line by address */
#define DEMCR REG(0xE000EDFCu)
#define DEMCR_TRCENA (1u << 24)
#define DWT_CTRL REG(0xE0001000u)
#define DWT_CTRL_CYCCNTENA (1u << 0)
#define DWT_CYCCNT REG(0xE0001004u)
#define DWT_LAR REG(0xE0001FB0u)                    /* Cortex-M7: write 0xC5ACCE55 to unlock */

#endif /* TINYLLS_STM32F746_H */
