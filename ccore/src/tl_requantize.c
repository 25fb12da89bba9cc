/* Requantization with TensorFlow Lite's arithmetic (MultiplyByQuantizedMultiplier, double
 * rounding): the one place where an int32 accumulator is scaled by a real multiplier. */
#include "tl_support.h"

int32_t tl_requantize(int32_t x, int32_t mult, int32_t shift)
{
    return tl_requantize_inl(x, mult, shift);
}

int32_t tl_requantize_single(int32_t x, int32_t mult, int32_t shift)
{
    const int total = 31 - shift;
    /* |x * mult| < 2^62, so adding the rounding bit cannot overflow int64 */
    const int64_t r = ((int64_t)x * mult + ((int64_t)1 << (total - 1))) >> total;
    return (int32_t)TL_CLAMP(r, INT32_MIN, INT32_MAX);
}
