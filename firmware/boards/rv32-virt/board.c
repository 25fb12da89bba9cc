/* Board port: rv32-virt, an RV32IMC (ESP32-C3 class) machine under qemu-system-riscv32 -M virt
 * -bios none, built with Debian's riscv64-unknown-elf-gcc (-march=rv32imc -mabi=ilp32, picolibc).
 *
 * Serial: the virt machine's NS16550A UART0 at 0x10000000 (FIFO on, 8N1; QEMU ignores the
 * baud rate). Reception is polled: QEMU stops taking bytes from the host while the 16-byte FIFO is
 * full, so nothing is lost while a training step runs. board_idle sleeps in WFI until the UART's
 * receive interrupt (PLIC source 10, enabled in mie.MEIE only: the interrupt wakes WFI but is never
 * taken, mstatus.MIE stays 0) and then claims and completes it at the PLIC.
 * Counter: minstret, retired instructions (with -icount shift=0 QEMU's counters are exact).
 * Exit: the SiFive test device at 0x100000 (QEMU exits with the given status).
 */
#include "board.h"
#include "tinylls.h"
#include "tl_proto_api.h"

#define REG8(a) (*(volatile uint8_t *)(a))
#define REG32(a) (*(volatile uint32_t *)(a))

#define UART0_BASE 0x10000000u
#define UART_RBR REG8(UART0_BASE + 0)   /* read: receive buffer; write: THR */
#define UART_THR REG8(UART0_BASE + 0)
#define UART_IER REG8(UART0_BASE + 1)   /* bit0 received-data interrupt */
#define UART_FCR REG8(UART0_BASE + 2)   /* bit0 FIFO enable, bit1/2 clear RX/TX FIFO */
#define UART_LCR REG8(UART0_BASE + 3)   /* 0x03: 8 data bits, no parity, 1 stop bit */
#define UART_MCR REG8(UART0_BASE + 4)   /* bit3 OUT2 (interrupt output enable on PC UARTs) */
#define UART_LSR REG8(UART0_BASE + 5)   /* bit0 data ready, bit5 THR empty */
#define UART_IRQ 10u

#define PLIC_BASE 0x0C000000u
#define PLIC_PRIORITY(irq) REG32(PLIC_BASE + 4u * (irq))
#define PLIC_ENABLE_CTX0 REG32(PLIC_BASE + 0x2000u)         /* hart 0 machine mode, sources 0..31 */
#define PLIC_THRESHOLD_CTX0 REG32(PLIC_BASE + 0x200000u)
#define PLIC_CLAIM_CTX0 REG32(PLIC_BASE + 0x200004u)

#define SIFIVE_TEST REG32(0x00100000u)
#define MIE_MEIE (1u << 11)
/* gcc 12's rv32imc needs the Zicsr extension spelled out for CSR instructions; -march=..._zicsr
 * would lose Debian's rv32im multilib (picolibc, libgcc), so only these lines enable it */
#define CSR_ASM(insn) ".option push\n.option arch, +zicsr\n" insn "\n.option pop"

void board_exit(int code)
{
    SIFIVE_TEST = code == 0 ? 0x5555u : (((uint32_t)code & 0xFFFFu) << 16) | 0x3333u;
    for (;;)
        __asm volatile("wfi");
}

void board_init(void)
{
    UART_IER = 0;
    UART_LCR = 0x03u;
    UART_FCR = 0x07u;
    UART_MCR = 0x08u;
    UART_IER = 0x01u;
    PLIC_PRIORITY(UART_IRQ) = 1;
    PLIC_THRESHOLD_CTX0 = 0;
    PLIC_ENABLE_CTX0 = 1u << UART_IRQ;
    __asm volatile(CSR_ASM("csrs mie, %0") : : "r"(MIE_MEIE));
}

int32_t board_uart_read(uint8_t *buf, int32_t max)
{
    int32_t n = 0;
    while (n < max && (UART_LSR & 0x01u))
        buf[n++] = UART_RBR;
    return n;
}

void board_uart_write(const uint8_t *data, int32_t n)
{
    for (int32_t i = 0; i < n; i++) {
        while (!(UART_LSR & 0x20u))
            ;
        UART_THR = data[i];
    }
}

void board_idle(void)
{
    if (!(UART_LSR & 0x01u))
        __asm volatile("wfi");          /* wakes on a pending MEIP even with mstatus.MIE = 0 */
    uint32_t id = PLIC_CLAIM_CTX0;      /* else MEIP stays pending and WFI would not sleep again */
    if (id)
        PLIC_CLAIM_CTX0 = id;
}

uint32_t board_counter(void)
{
    uint32_t v;
    __asm volatile(CSR_ASM("csrr %0, minstret") : "=r"(v));
    return v;
}

uint32_t board_counter_kind(void)
{
    return TL_PROTO_COUNTER_INSN;
}

const char *board_name(void)
{
    return "rv32-virt";
}

/* No checkpoint flash on this port (the virt machine's pflash is not wired up): CHECKPOINT is
 * refused (TL_PROTO_ERR_NO_FLASH). */
const tl_flash *board_flash(void)
{
    return 0;
}

int main(void)
{
    extern int tinylls_app_main(void);
    return tinylls_app_main();
}
