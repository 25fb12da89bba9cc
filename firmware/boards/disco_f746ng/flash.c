/* Board port disco_f746ng: checkpoint flash in the STM32F746's own flash (RM0385 3.3, 3.7).
 *
 * Sector map (single bank, 1 MB at 0x08000000): 0-3 32 KB, 4 128 KB, 5-7 256 KB. A checkpoint of
 * the VWW-size model is 223,608 B + a 256 B record page, so each slot needs a 256 KB sector: the
 * region is sectors 6 and 7 (0x08080000, 512 KB; tl_flash sector_bytes 256 KB, slot A = sector 6,
 * slot B = sector 7). The firmware image (link.ld) is limited to sectors 0-5 (512 KB).
 * Erase: SER + SNB + STRT, wait BSY (a 256 KB sector takes ~1-2 s, the CPU stalls on flash reads
 * meanwhile: code runs from this bank). Program: PG with parallelism x32, one aligned word at a time
 * (a write that is not a whole word is merged into the word from flash, with its other bytes 0xFF
 * so they stay as they are: programming 1s changes nothing, NOR only clears bits). After every
 * operation the data cache lines of the range are invalidated (the flash is read through the
 * cached AXIM interface). Errors (SR: OPERR, WRPERR, PGAERR, PGPERR, ERSERR) fail the call.
 * Endurance: 10 k erase cycles per sector (datasheet DS10916): the wear figures of
 * bench/powercut.py apply per 256 KB sector, which here holds a whole slot.
 * Compile-checked only (no board in CI).
 */
#include "board.h"
#include "stm32f746.h"
#include "tinylls.h"

#define CKPT_BASE 0x08080000u        /* sector 6 */
#define CKPT_SECTOR_BYTES 0x40000u   /* 256 KB */
#define CKPT_FIRST_SECTOR 6u
#define CKPT_PAGE_BYTES 256u          /* program unit the checkpoint writer uses (any size works) */

static void dcache_invalidate(uint32_t addr, uint32_t n)
{
    __asm volatile("dsb" ::: "memory");
    for (uint32_t a = addr & ~31u; a < addr + n; a += 32u)
        SCB_DCIMVAC = a;
    __asm volatile("dsb\n isb" ::: "memory");
}

static int32_t wait_done(void)
{
    while (FLASH_SR & FLASH_SR_BSY)
        ;
    uint32_t sr = FLASH_SR;
    FLASH_SR = sr & (FLASH_SR_ERRORS | FLASH_SR_EOP);   /* write 1 to clear */
    return (sr & FLASH_SR_ERRORS) ? -1 : 0;
}

static void unlock(void)
{
    if (FLASH_CR & FLASH_CR_LOCK) {
        FLASH_KEYR = FLASH_KEY1;
        FLASH_KEYR = FLASH_KEY2;
    }
}

static void lock(void)
{
    FLASH_CR |= FLASH_CR_LOCK;
}

static int32_t f_erase(void *user, uint32_t addr)
{
    (void)user;
    if (addr % CKPT_SECTOR_BYTES != 0 || addr >= 2u * CKPT_SECTOR_BYTES)
        return -1;
    const uint32_t snb = CKPT_FIRST_SECTOR + addr / CKPT_SECTOR_BYTES;
    unlock();
    if (wait_done() != 0) {
        lock();
        return -1;
    }
    FLASH_CR = FLASH_CR_PSIZE_X32 | FLASH_CR_SER | (snb << FLASH_CR_SNB_POS);
    FLASH_CR |= FLASH_CR_STRT;
    __asm volatile("dsb" ::: "memory");
    int32_t s = wait_done();
    FLASH_CR = 0;
    lock();
    dcache_invalidate(CKPT_BASE + addr, CKPT_SECTOR_BYTES);
    return s;
}

static int32_t f_program(void *user, uint32_t addr, const uint8_t *data, int32_t n)
{
    (void)user;
    if (n <= 0 || addr + (uint32_t)n > 2u * CKPT_SECTOR_BYTES)
        return -1;
    unlock();
    int32_t s = wait_done();
    FLASH_CR = FLASH_CR_PSIZE_X32 | FLASH_CR_PG;
    uint32_t a = addr & ~3u;
    const uint32_t end = addr + (uint32_t)n;
    while (s == 0 && a < end) {
        uint32_t w = 0xFFFFFFFFu;                        /* bytes outside [addr, end): left as they are */
        for (uint32_t b = 0; b < 4u; b++) {
            uint32_t p = a + b;
            if (p >= addr && p < end)
                w = (w & ~(0xFFu << (8u * b))) | ((uint32_t)data[p - addr] << (8u * b));
        }
        *(volatile uint32_t *)(CKPT_BASE + a) = w;
        __asm volatile("dsb" ::: "memory");
        s = wait_done();
        a += 4u;
    }
    FLASH_CR = 0;
    lock();
    dcache_invalidate(CKPT_BASE + (addr & ~3u), (uint32_t)n + 4u);
    return s;
}

static int32_t f_read(void *user, uint32_t addr, uint8_t *out, int32_t n)
{
    (void)user;
    if (n < 0 || addr + (uint32_t)n > 2u * CKPT_SECTOR_BYTES)
        return -1;
    const volatile uint8_t *p = (const volatile uint8_t *)(CKPT_BASE + addr);
    for (int32_t i = 0; i < n; i++)
        out[i] = p[i];
    return 0;
}

static const tl_flash g_flash = {
    2u * CKPT_SECTOR_BYTES, CKPT_SECTOR_BYTES, CKPT_PAGE_BYTES, f_erase, f_program, f_read, 0};

const tl_flash *board_flash(void)
{
    return &g_flash;
}
