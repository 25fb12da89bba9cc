/* Board port: Espressif ESP32-DevKitC (esp32dev, Xtensa LX6 at 240 MHz), built by PlatformIO
 * (env esp32dev, Arduino framework). NOT built or run in CI: the Xtensa toolchain and the framework
 * come from PlatformIO's registry, and no ESP32 emulator is available here; see firmware/README.md.
 *
 * Serial: UART0 through the board's USB-serial bridge (/dev/ttyUSB0), 115200 8N1, with a 4 KB
 * driver receive buffer. Counter: the CPU cycle counter (CCOUNT) via ESP.getCycleCount().
 * tinylls_app_main() never returns, so it runs inside setup() on the Arduino loop task (core 1).
 */
#include <Arduino.h>

extern "C" {
#include "board.h"
#include "tinylls.h"
#include "tl_proto_api.h"
int tinylls_app_main(void);
}

extern "C" void board_init(void)
{
    Serial.setRxBufferSize(4096);
    Serial.begin(115200);
}

extern "C" int32_t board_uart_read(uint8_t *buf, int32_t max)
{
    int avail = Serial.available();
    if (avail <= 0)
        return 0;
    if (avail > max)
        avail = max;
    return (int32_t)Serial.readBytes(buf, (size_t)avail);
}

extern "C" void board_uart_write(const uint8_t *data, int32_t n)
{
    Serial.write(data, (size_t)n);
}

extern "C" void board_idle(void)
{
    delay(1);   /* lets the idle task run (task watchdog) */
}

extern "C" uint32_t board_counter(void)
{
    return ESP.getCycleCount();
}

extern "C" uint32_t board_counter_kind(void)
{
    return TL_PROTO_COUNTER_CYCLES;
}

extern "C" uint32_t board_free_ram(void)
{
    return ESP.getFreeHeap();
}

/* Not measured on this port yet (the Arduino loop task owns the stack): INFO reports 0. */
extern "C" uint32_t board_stack_used(void)
{
    return 0;
}

extern "C" const char *board_name(void)
{
    return "esp32dev";
}

/* Checkpoints: not on this port yet. The way to add them behind the same tl_flash interface:
 * a data partition of >= 2 x 228 KB (partitions.csv, subtype e.g. 0x40) found with
 * esp_partition_find_first(); erase = esp_partition_erase_range(part, addr, 4096) (4 KB sectors),
 * program = esp_partition_write(part, addr, data, n) (NOR: 1 -> 0 only, 256 B pages),
 * read = esp_partition_read(); sector_bytes 4096, page_bytes 256. Flash encryption changes the
 * program granularity (16 B blocks, no re-program of a block): keep it off for the data partition.
 * Until then CHECKPOINT is refused (TL_PROTO_ERR_NO_FLASH). */
extern "C" const tl_flash *board_flash(void)
{
    return nullptr;
}

void setup()
{
    tinylls_app_main();
}

void loop()
{
}
