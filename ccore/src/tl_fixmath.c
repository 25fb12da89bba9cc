/* Fixed-point exp, log, sqrt and sin for the LLS local heads: integer only, no tables, so the
 * same bits come out on an FPU-less Cortex-M0+ and on the host. */
#include "tl_support.h"

#define TL_LOG2E_Q30 1549082005LL /* log2(e) */
#define TL_LN2_Q30 744261118LL    /* ln(2) */
#define TL_LN2_Q16 45426LL
#define TL_PIO2_Q30 1686629713LL  /* pi / 2 */

static int64_t mul_q30(int64_t a, int64_t b)
{
    return tl_shr_round(a * b, 30);
}

int32_t tl_exp_q16_to_q24(int32_t x_q16)
{
    if (x_q16 >= 0)
        return TL_Q24_ONE;
    /* exp(x) = 2^(x log2 e) = 2^-k * 2^-u, k integer, u in [0, 1). */
    int64_t y = tl_shr_round((int64_t)(-x_q16) * TL_LOG2E_Q30, 30); /* -x log2 e, Q16 */
    int64_t k = y >> 16;
    if (k >= 40)
        return 0;
    int64_t u = y & 0xFFFF;                       /* Q16 */
    int64_t v = (u * TL_LN2_Q30) >> 16;           /* u ln 2 in Q30, < 0.7 */
    /* exp(-v) by Horner on the Taylor series to v^8/8!: error < 0.7^9/9! < 2^-23. */
    int64_t r = TL_Q30_ONE;
    for (int i = 8; i >= 1; i--)
        r = TL_Q30_ONE - mul_q30(v, r) / i;
    /* r in Q30 -> Q24, then the 2^-k */
    return (int32_t)tl_shr_round(r, 6 + (int)k);
}

uint32_t tl_isqrt64(uint64_t v)
{
    uint64_t res = 0, bit = (uint64_t)1 << 62;
    while (bit > v)
        bit >>= 2;
    while (bit) {
        if (v >= res + bit) {
            v -= res + bit;
            res = (res >> 1) + bit;
        } else {
            res >>= 1;
        }
        bit >>= 2;
    }
    return (uint32_t)res;
}

/* log2(v) in Q16 for v >= 1: integer part from the leading bit, 16 fraction bits by squaring. */
static int64_t log2_q16(uint64_t v)
{
    int e = 63;
    while (!(v >> e))
        e--;
    /* mantissa m = v / 2^e in [1, 2), Q30 */
    uint64_t m = e >= 30 ? v >> (e - 30) : v << (30 - e);
    int64_t frac = 0;
    for (int i = 15; i >= 0; i--) {
        m = (m * m) >> 30;
        if (m >= ((uint64_t)2 << 30)) {
            m >>= 1;
            frac |= (int64_t)1 << i;
        }
    }
    return ((int64_t)e << 16) + frac;
}

int32_t tl_ln_ratio_q16(uint64_t num, uint64_t den)
{
    if (num == 0 || den == 0)
        return 0;
    int64_t d = log2_q16(num) - log2_q16(den);
    return (int32_t)tl_shr_round(d * TL_LN2_Q16, 16);
}

/* sin(r * pi/2 / 2^30) for r in [0, 2^30], Q30, Taylor to theta^13 (error < 2^-27). */
static int64_t sin_quarter_q30(int64_t r)
{
    int64_t th = tl_shr_round(r * TL_PIO2_Q30, 30);
    int64_t th2 = mul_q30(th, th);
    int64_t s = TL_Q30_ONE;
    for (int i = 13; i >= 3; i -= 2)
        s = TL_Q30_ONE - mul_q30(th2, s) / ((int64_t)i * (i - 1));
    return mul_q30(th, s);
}

int32_t tl_sin_turns_q15(uint32_t phase)
{
    uint32_t quadrant = phase >> 30;
    int64_t r = (int64_t)(phase & 0x3FFFFFFFu);
    if (quadrant & 1u)
        r = TL_Q30_ONE - r;
    int64_t s = tl_shr_round(sin_quarter_q30(r), 15);
    return (int32_t)(quadrant & 2u ? -s : s);
}
