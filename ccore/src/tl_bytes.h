/* Little-endian byte access for the model file and the serial protocol: byte by byte, so it is
 * independent of the core's endianness and of the buffer's alignment. Internal header. */
#ifndef TL_BYTES_H
#define TL_BYTES_H

#include <stdint.h>

static inline void tl_put_u16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void tl_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t tl_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* Two's complement reinterpretation without relying on implementation-defined conversion. */
static inline int32_t tl_get_i32(const uint8_t *p)
{
    const uint32_t u = tl_get_u32(p);
    if (u <= 0x7FFFFFFFu)
        return (int32_t)u;
    return -(int32_t)(~u) - 1;
}

#endif /* TL_BYTES_H */
