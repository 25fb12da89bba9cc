/* A sampling profiler for the emulated Cortex-M4 (mps2-an386 under QEMU -icount shift=0), built
 * only with -DTL_PROFILE (by bench/mcu_perf.py, for mps2-an386: the timer and its IRQ are that
 * board's). QEMU has no cycle counter and the SysTick counter ticks every 40 instructions, too
 * coarse to time a kernel's phases; instead the CMSDK
 * timer 0 interrupts every ~500 instructions (a pseudo-random reload, so that the sampling period
 * does not lock onto a loop's period) and the handler records the interrupted PC with the layer
 * the model was running (tl_prof_layer, set in ccore's layer loop). The samples go to the file
 * tinylls-profile.bin in QEMU's working directory through semihosting (which the run must enable),
 * flushed when the buffer fills and after every protocol command. The host maps PCs to functions
 * and source lines with the ELF. Nothing here is in a normal build. */
#include "board.h"
#include "tinylls.h"

#if defined(TL_PROFILE) && defined(__ARM_ARCH_7EM__)

#define REG(a) (*(volatile uint32_t *)(a))
#define TIMER0_CTRL REG(0x40000000u)     /* bit0 enable, bit3 interrupt enable */
#define TIMER0_RELOAD REG(0x40000008u)
#define TIMER0_VALUE REG(0x40000004u)
#define TIMER0_INTCLEAR REG(0x4000000Cu)
#define TIMER0_IRQ 8
#define NVIC_ISER0 REG(0xE000E100u)
#define SCB_VTOR REG(0xE000ED08u)
#define PROF_SAMPLES 1024
#define PROF_VECTORS (16 + 32)

volatile int32_t tl_prof_layer = -1;

static uint32_t g_samples[PROF_SAMPLES];
static volatile uint32_t g_n;
static int32_t g_fd = -1;
static uint32_t g_lcg = 12345u;
/* the vector table moved to RAM so that the timer's entry can be added (VTOR: 128-byte aligned) */
static uint32_t g_vectors[PROF_VECTORS] __attribute__((aligned(256)));

static int32_t semihost(uint32_t op, const void *arg)
{
    register uint32_t r0 __asm("r0") = op;
    register const void *r1 __asm("r1") = arg;
    __asm volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return (int32_t)r0;
}

static void flush_samples(void)
{
    if (g_fd < 0 || g_n == 0)
        return;
    uint32_t a[3] = {(uint32_t)g_fd, (uint32_t)(uintptr_t)g_samples, g_n * 4u};
    (void)semihost(0x05, a); /* SYS_WRITE */
    g_n = 0;
}

/* Reload in ticks of 40 instructions: 8..17, mean 12.5 ticks (~500 instructions). */
static uint32_t next_reload(void)
{
    g_lcg = g_lcg * 1664525u + 1013904223u;
    return 8u + (g_lcg >> 28) % 10u;
}

/* The stacked exception frame: r0 r1 r2 r3 r12 lr pc xpsr; the handler's own frame is naked so
 * that the frame pointer is the SP at entry (MSP: the firmware runs on one stack). */
void prof_sample(const uint32_t *frame)
{
    TIMER0_INTCLEAR = 1u;
    TIMER0_RELOAD = next_reload();
    const uint32_t layer = (uint32_t)(tl_prof_layer + 1) & 0xFFu;
    g_samples[g_n++] = layer << 24 | (frame[6] & 0x00FFFFFFu);
    if (g_n == PROF_SAMPLES)
        flush_samples();
}

__attribute__((naked)) static void prof_timer_handler(void)
{
    __asm volatile("tst lr, #4\n"
                   "ite eq\n"
                   "mrseq r0, msp\n"
                   "mrsne r0, psp\n"
                   "b prof_sample\n");
}

void prof_start(void)
{
    static const char name[] = "tinylls-profile.bin";
    uint32_t a[3] = {(uint32_t)(uintptr_t)name, 5u /* "wb" */, sizeof(name) - 1u};
    g_fd = semihost(0x01, a); /* SYS_OPEN */
    if (g_fd < 0)
        return;
    const uint32_t *old = (const uint32_t *)SCB_VTOR;
    for (int i = 0; i < PROF_VECTORS; i++)
        g_vectors[i] = old[i];
    g_vectors[16 + TIMER0_IRQ] = (uint32_t)(uintptr_t)prof_timer_handler;
    __asm volatile("dsb" ::: "memory");
    SCB_VTOR = (uint32_t)(uintptr_t)g_vectors;
    __asm volatile("dsb\n isb" ::: "memory");
    TIMER0_RELOAD = next_reload();
    TIMER0_VALUE = TIMER0_RELOAD;
    TIMER0_CTRL = 0x9u;
    NVIC_ISER0 = 1u << TIMER0_IRQ;
}

/* after every protocol command: the samples of a command are on file when its answer is read */
void prof_command_done(void)
{
    tl_prof_layer = -1;
    flush_samples();
}

#endif
