/* On-target unit tests of ccore, run by `pio test -e <board>` in QEMU (test_framework = custom;
 * firmware/test/test_custom_runner.py reads the lines). The board port boots as usual and calls
 * tinylls_app_main, which this suite provides instead of firmware/app. Each case prints
 * "TLTEST <name> PASS" or "TLTEST <name> FAIL <detail>" on the board's serial port, then
 * "TLTEST-END <failed>"; the board exits with the number of failed cases.
 * Expected values come from the host build of the same core (zlib.crc32 and host._tinylls). */
#include "board.h"
#include "tinylls.h"
#include "tl_proto_api.h"

static int g_failed;

static void put(const char *s)
{
    int32_t n = 0;
    while (s[n])
        n++;
    board_uart_write((const uint8_t *)s, n);
}

static void put_int(int32_t v)
{
    char buf[12];
    int i = 11;
    uint32_t u = v < 0 ? 0u - (uint32_t)v : (uint32_t)v;
    buf[i] = 0;
    do {
        buf[--i] = (char)('0' + u % 10u);
        u /= 10u;
    } while (u);
    if (v < 0)
        buf[--i] = '-';
    put(buf + i);
}

static void result(const char *name, int ok, int32_t got, int32_t want)
{
    put("TLTEST ");
    put(name);
    if (ok) {
        put(" PASS\n");
        return;
    }
    g_failed++;
    put(" FAIL got ");
    put_int(got);
    put(" want ");
    put_int(want);
    put("\n");
}

static void test_crc32(void)
{
    static const uint8_t check[] = "123456789";
    uint32_t crc = tl_crc32(0, check, 9);
    result("crc32_check_value", crc == 0xCBF43926u, (int32_t)crc, (int32_t)0xCBF43926u);
    uint32_t part = tl_crc32(tl_crc32(0, check, 4), check + 4, 5);
    result("crc32_incremental", part == crc, (int32_t)part, (int32_t)crc);
}

static void test_requantize(void)
{
    static const struct { int32_t x, mult, shift, dbl, single; } cases[] = {
        {1000, 1073741824, 0, 500, 500},
        {-1000, 1073741824, 0, -500, -500},
        {123456789, 1518500250, -3, 10912142, 10912142},
        {-7, 1073741824, -1, -2, -2},
        {2147483647, 2147483647, 0, 2147483646, 2147483646},
        {-2147483647 - 1, 2147483647, 0, -2147483647, -2147483647},
        {5, 1073741824, -1, 2, 1},
        {-5, 1073741824, -1, -1, -1},
        {100, 2147483647, 30, 0, 2147483647},
        {77, 1500000000, 5, 1721, 1721},
    };
    int32_t bad_dbl = -1, bad_single = -1;
    for (int32_t i = 0; i < (int32_t)(sizeof(cases) / sizeof(cases[0])); i++) {
        if (bad_dbl < 0 && tl_requantize(cases[i].x, cases[i].mult, cases[i].shift) != cases[i].dbl)
            bad_dbl = i;
        if (bad_single < 0 && tl_requantize_single(cases[i].x, cases[i].mult, cases[i].shift) != cases[i].single)
            bad_single = i;
    }
    result("requantize_double_rounding", bad_dbl < 0, bad_dbl, -1);
    result("requantize_single_rounding", bad_single < 0, bad_single, -1);
}

static void test_slip(void)
{
    static const uint8_t frame[] = {0x01, 0xC0, 0xDB, 0x02};
    static const uint8_t want[] = {0xC0, 0x01, 0xDB, 0xDC, 0xDB, 0xDD, 0x02, 0xC0};
    uint8_t out[16];
    int32_t n = 0;
    tl_status s = tl_proto_slip_encode(frame, 4, out, (int32_t)sizeof(out), &n);
    int ok = s == TL_OK && n == (int32_t)sizeof(want);
    for (int32_t i = 0; ok && i < n; i++)
        ok = out[i] == want[i];
    result("slip_escapes_end_and_esc", ok, n, (int32_t)sizeof(want));
}

static void test_modelfile_rejects_garbage(void)
{
    static uint32_t blob[16];
    static tl_layer layers[2];
    tl_model m;
    for (int i = 0; i < 16; i++)
        blob[i] = 0xDEADBEEFu;
    tl_status s = tl_modelfile_load((uint8_t *)blob, (int32_t)sizeof(blob), layers, 2, &m);
    result("modelfile_rejects_garbage", s != TL_OK, s, -1);
}

static void test_stack_is_measured(void)
{
    uint32_t used = board_stack_used();
    /* mps2-an386 and rv32-virt paint their stacks; other ports report 0 */
    result("stack_high_water_mark", used > 0 && used < 32768u, (int32_t)used, 1);
}

int tinylls_app_main(void)
{
    board_init();
    put("TLTEST-BEGIN ");
    put(board_name());
    put("\n");
    test_crc32();
    test_requantize();
    test_slip();
    test_modelfile_rejects_garbage();
    test_stack_is_measured();
    put("TLTEST-END ");
    put_int(g_failed);
    put("\n");
    return g_failed;
}
