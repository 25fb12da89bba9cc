/* Requantization with TensorFlow Lite's arithmetic (MultiplyByQuantizedMultiplier, double
 * rounding): the one place where an int32 accumulator is scaled by a real multiplier. */
#include "tl_support.h"

/* round(a * b / 2^31) with ties away from zero, saturating the single overflow case
 * INT32_MIN * INT32_MIN (gemmlowp's SaturatingRoundingDoublingHighMul). */
static int32_t srdhm(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN)
        return INT32_MAX;
    int64_t ab = (int64_t)a * (int64_t)b;
    int64_t nudge = ab >= 0 ? (1LL << 30) : (1 - (1LL << 30));
    return (int32_t)((ab + nudge) / (1LL << 31)); /* C division truncates, as TFLite's does */
}

/* x / 2^e rounded half away from zero (gemmlowp's RoundingDivideByPOT), e in [0, 31]. */
static int32_t rounding_divide_by_pot(int32_t x, int e)
{
    int32_t mask = (int32_t)((1LL << e) - 1);
    int32_t remainder = x & mask;
    int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> e) + (remainder > threshold ? 1 : 0);
}

int32_t tl_requantize(int32_t x, int32_t mult, int32_t shift)
{
    int left = shift > 0 ? shift : 0;
    int right = shift > 0 ? 0 : -shift;
    /* TFLite multiplies by 2^left in int32; wrap through uint32 so overflow is defined. */
    int32_t xs = (int32_t)((uint32_t)x << left);
    return rounding_divide_by_pot(srdhm(xs, mult), right);
}

int32_t tl_requantize_single(int32_t x, int32_t mult, int32_t shift)
{
    const int total = 31 - shift;
    /* |x * mult| < 2^62, so adding the rounding bit cannot overflow int64 */
    const int64_t r = ((int64_t)x * mult + ((int64_t)1 << (total - 1))) >> total;
    return (int32_t)TL_CLAMP(r, INT32_MIN, INT32_MAX);
}
