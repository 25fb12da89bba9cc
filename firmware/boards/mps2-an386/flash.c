/* Board port mps2-an386: an emulated NOR flash for checkpoints that persists across QEMU runs.
 *
 * The device is the host file "tinylls-flash.bin" in QEMU's working directory, reached through ARM
 * semihosting file I/O (QEMU -semihosting-config enable=on,target=native; host.stream's QemuBoard
 * passes it). No file (or no semihosting: the probe then takes a HardFault that startup.c turns into
 * a failed call) = no checkpoint flash. The host makes the file (host/flashsim.py
 * make_flash_file): `size` bytes of 0xFF followed by a 64-byte trailer of little-endian u32 words:
 *   0 magic "TLFS"   1 erases   2 programs   3 bytes programmed   4 cut_at   5 ops (erases +
 *   programs so far)   6 violations (programs asking for a 0 -> 1 bit)   7 power cuts taken
 *   8 sector bytes   9 page bytes
 * NOR rules are enforced here: erase a whole sector to 0xFF; a program lies within one page and
 * may only clear bits - one that would set a bit is counted as a violation, only its 1 -> 0 part is
 * applied (as real NOR) and the call fails.
 * Power cuts: when ops + 1 == cut_at, that operation is done half (the first half of the page's
 * bytes, or of the sector), the counters are written with cut_at = 0 and cuts + 1, and the board
 * stops at once (semihosting exit, status TL_FW_POWER_CUT_EXIT): the next QEMU run boots on that
 * flash. The counters are written back after every operation.
 */
#include "board.h"
#include "tinylls.h"

#define FLASH_FILE "tinylls-flash.bin"
#define TRAILER_WORDS 16
#define TL_FW_POWER_CUT_EXIT 0x50

enum { T_MAGIC, T_ERASES, T_PROGRAMS, T_BYTES, T_CUT_AT, T_OPS, T_VIOLATIONS, T_CUTS, T_SECTOR, T_PAGE };

void board_exit(int code);

static int32_t g_fd = -1;
static uint32_t g_trailer[TRAILER_WORDS];
static tl_flash g_flash;

/* ARM semihosting call (bkpt 0xab): r0 = operation, r1 = argument block. */
static int32_t semihost(uint32_t op, const void *arg)
{
    register uint32_t r0 __asm("r0") = op;
    register const void *r1 __asm("r1") = arg;
    __asm volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return (int32_t)r0;
}

static int32_t f_seek(uint32_t pos)
{
    uint32_t a[2] = {(uint32_t)g_fd, pos};
    return semihost(0x0A, a);                       /* SYS_SEEK: 0 on success */
}

static int32_t f_read(uint32_t pos, void *buf, uint32_t n)
{
    uint32_t a[3] = {(uint32_t)g_fd, (uint32_t)(uintptr_t)buf, n};
    if (f_seek(pos) != 0)
        return -1;
    return semihost(0x06, a) == 0 ? 0 : -1;        /* SYS_READ: bytes NOT read */
}

static int32_t f_write(uint32_t pos, const void *buf, uint32_t n)
{
    uint32_t a[3] = {(uint32_t)g_fd, (uint32_t)(uintptr_t)buf, n};
    if (f_seek(pos) != 0)
        return -1;
    return semihost(0x05, a) == 0 ? 0 : -1;        /* SYS_WRITE: bytes NOT written */
}

static int32_t save_trailer(void)
{
    return f_write(g_flash.size, g_trailer, sizeof(g_trailer));
}

/* Counts an operation; 1 when it is the one a power cut tears. */
static int32_t tick(void)
{
    g_trailer[T_OPS]++;
    return g_trailer[T_CUT_AT] != 0 && g_trailer[T_OPS] == g_trailer[T_CUT_AT];
}

static void power_cut(void)
{
    g_trailer[T_CUT_AT] = 0;
    g_trailer[T_CUTS]++;
    save_trailer();
    board_exit(TL_FW_POWER_CUT_EXIT);
}

static int32_t nor_erase(void *user, uint32_t addr)
{
    (void)user;
    static const uint32_t ff[64] = {
        ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u,
        ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u,
        ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u,
        ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u};
    if (addr % g_flash.sector_bytes != 0 || addr >= g_flash.size)
        return -1;
    const int32_t torn = tick();
    const uint32_t n = torn ? g_flash.sector_bytes / 2 : g_flash.sector_bytes;
    for (uint32_t off = 0; off < n; off += sizeof(ff))
        if (f_write(addr + off, ff, n - off < sizeof(ff) ? n - off : sizeof(ff)) != 0)
            return -1;
    g_trailer[T_ERASES]++;
    if (torn)
        power_cut();
    return save_trailer();
}

static int32_t nor_program(void *user, uint32_t addr, const uint8_t *data, int32_t n)
{
    (void)user;
    uint8_t cur[TL_CKPT_MAX_PAGE];
    const uint32_t page = g_flash.page_bytes;
    if (n <= 0 || (uint32_t)n > page || addr / page != (addr + (uint32_t)n - 1) / page
        || addr + (uint32_t)n > g_flash.size)
        return -1;
    const int32_t torn = tick();
    const int32_t k = torn ? n / 2 : n;
    if (f_read(addr, cur, (uint32_t)k) != 0)
        return -1;
    int32_t bad = 0;
    for (int32_t i = 0; i < k; i++) {
        if ((uint8_t)(~cur[i] & data[i]) != 0)
            bad = 1;                                /* 0 -> 1 asked: NOR cannot */
        cur[i] &= data[i];
    }
    if (k > 0 && f_write(addr, cur, (uint32_t)k) != 0)
        return -1;
    g_trailer[T_PROGRAMS]++;
    g_trailer[T_BYTES] += (uint32_t)k;
    g_trailer[T_VIOLATIONS] += (uint32_t)bad;
    if (torn)
        power_cut();
    if (save_trailer() != 0)
        return -1;
    return bad ? -1 : 0;
}

static int32_t nor_read(void *user, uint32_t addr, uint8_t *out, int32_t n)
{
    (void)user;
    if (n < 0 || addr + (uint32_t)n > g_flash.size)
        return -1;
    return n == 0 ? 0 : f_read(addr, out, (uint32_t)n);
}

/* set by board_flash around the probe: startup.c's HardFault handler turns a semihosting call
 * without a debugger (QEMU started without -semihosting-config) into a failed call */
volatile uint32_t g_semihost_probing;

const tl_flash *board_flash(void)
{
    static const char name[] = FLASH_FILE;
    uint32_t open_args[3] = {(uint32_t)(uintptr_t)name, 3u /* "r+b" */, sizeof(name) - 1};
    g_semihost_probing = 1;
    g_fd = semihost(0x01, open_args);              /* SYS_OPEN */
    g_semihost_probing = 0;
    if (g_fd < 0)
        return 0;
    uint32_t flen_args[1] = {(uint32_t)g_fd};
    int32_t len = semihost(0x0C, flen_args);       /* SYS_FLEN */
    if (len < (int32_t)sizeof(g_trailer))
        return 0;
    g_flash.size = (uint32_t)len - sizeof(g_trailer);
    if (f_read(g_flash.size, g_trailer, sizeof(g_trailer)) != 0 || g_trailer[T_MAGIC] != 0x53464C54u)
        return 0;
    g_flash.sector_bytes = g_trailer[T_SECTOR];
    g_flash.page_bytes = g_trailer[T_PAGE];
    g_flash.erase = nor_erase;
    g_flash.program = nor_program;
    g_flash.read = nor_read;
    g_flash.user = 0;
    return &g_flash;
}
