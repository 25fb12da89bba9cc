/* CRC-32 (IEEE 802.3 polynomial, reflected), bit-identical to zlib.crc32.
 * Bitwise rather than table-driven: 1 KB of flash saved matters more on the smallest boards than
 * the speed, and model files are checked once per load. */
#include "tinylls.h"

uint32_t tl_crc32(uint32_t crc, const uint8_t *data, int32_t n)
{
    crc = ~crc;
    for (int32_t i = 0; i < n; i++) {
        crc ^= data[i];
        for (int b = 0; b < 8; b++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}
