/* Internal helpers shared by the kernels and the training code: not part of the public API.
 *
 * Arithmetic notes that hold everywhere in ccore:
 *  - Right shifts of negative integers are arithmetic (floor). C99 leaves this implementation-
 *    defined; every compiler tinylls targets (gcc, clang, arm-none-eabi, riscv) does so.
 *  - Nothing here uses float: fixed-point formats are named Qn (n fractional bits).
 */
#ifndef TL_SUPPORT_H
#define TL_SUPPORT_H

#include <stddef.h>

#include "tinylls.h"

#define TL_MIN(a, b) ((a) < (b) ? (a) : (b))
#define TL_MAX(a, b) ((a) > (b) ? (a) : (b))
#define TL_CLAMP(x, lo, hi) TL_MIN(TL_MAX((x), (lo)), (hi))

/* ---------------------------------------------------------------- fixed-point formats */
#define TL_Q16_ONE (1 << 16)
#define TL_Q24_ONE (1 << 24) /* probabilities and errors of the local heads */
#define TL_Q30_ONE (1 << 30)
#define TL_BASIS_ONE 32768   /* basis values are Q15 with +-1 exactly +-32768 */

/* Rounding (half away from zero) division of a by b > 0. */
static inline int64_t tl_div_round(int64_t a, int64_t b)
{
    return a >= 0 ? (a + b / 2) / b : -((-a + b / 2) / b);
}

/* Rounding right shift (half away from zero), s in [0, 62]. */
static inline int64_t tl_shr_round(int64_t a, int s)
{
    if (s <= 0)
        return a;
    return a >= 0 ? (a + ((int64_t)1 << (s - 1))) >> s : -((-a + ((int64_t)1 << (s - 1))) >> s);
}

/* TFLite's MultiplyByQuantizedMultiplier (double rounding): the saturating rounding doubling high
 * multiply of gemmlowp, then a rounding (half away from zero) divide by 2^right. The one
 * definition: tl_requantize() (the public call) and the kernels' inner loops both use it. */
static inline int32_t tl_requantize_inl(int32_t x, int32_t mult, int32_t shift)
{
    const int left = shift > 0 ? shift : 0;
    const int right = shift > 0 ? 0 : -shift;
    /* TFLite multiplies by 2^left in int32; wrap through uint32 so overflow is defined */
    const int32_t xs = (int32_t)((uint32_t)x << left);
    int32_t hi;
    if (xs == INT32_MIN && mult == INT32_MIN) {
        hi = INT32_MAX;
    } else {
        const int64_t ab = (int64_t)xs * (int64_t)mult;
        const int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
        hi = (int32_t)((ab + nudge) / ((int64_t)1 << 31)); /* C division truncates, as TFLite's */
    }
    const int32_t mask = (int32_t)(((int64_t)1 << right) - 1);
    const int32_t remainder = hi & mask;
    const int32_t threshold = (mask >> 1) + (hi < 0 ? 1 : 0);
    return (hi >> right) + (remainder > threshold ? 1 : 0);
}

/* The requantization a kernel's parameters select. */
static inline int32_t tl_requantize_p(const tl_conv_params *p, int32_t x, int32_t mult, int32_t shift)
{
    return p->single_rounding ? tl_requantize_single(x, mult, shift) : tl_requantize_inl(x, mult, shift);
}

/* A requantized value plus the output zero point, wrapping as the vector lanes of the fast paths
 * do: v + zp for every model whose accumulators stay in range, and defined (no signed overflow)
 * when a crafted file's multipliers drive requantization to the int32 edge (found by fuzzing). */
static inline int32_t tl_add_zp(int32_t v, int32_t zp)
{
    return (int32_t)((uint32_t)v + (uint32_t)zp);
}

/* A quantized multiplier (mult, shift) as the API defines it: mult 0 or in [2^30, 2^31) and shift
 * in QuantizeMultiplier's range [-31, 30]. The one check, for tl_model_prepare, the model file
 * loader and the protocol's learning-rate command. */
static inline int tl_qmult_ok(int32_t mult, int32_t shift)
{
    return (mult == 0 || mult >= (1 << 30)) && shift >= -31 && shift <= 30;
}

/* ---------------------------------------------------------------- deterministic randomness */
/* A counter-based generator: the random word for (seed, step, layer, index) is a pure function of
 * those numbers, so the order in which a kernel visits weights (SIMD, tiling, layer pipelining
 * across cores) can never change a result bit. Mixing is murmur3's fmix32, applied per word. */
static inline uint32_t tl_mix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

static inline uint32_t tl_rand4(uint32_t a, uint32_t b, uint32_t c, uint32_t d)
{
    uint32_t h = tl_mix32(a ^ 0x9E3779B9u);
    h = tl_mix32(h ^ b);
    h = tl_mix32(h ^ (c * 0x9E3779B9u));
    return tl_mix32(h ^ d);
}

/* ---------------------------------------------------------------- kernels with host scratch */
/* tl_pwconv_s8 with caller-owned scratch for the host's x86 path (its packed weights, 128 KB):
 * with scratch NULL or smaller than tl_pwconv_s8_scratch_bytes() (0 where no path needs any) the
 * other paths run, with the same result bits. tl_pwconv_s8 is this with no scratch. */
int32_t tl_pwconv_s8_scratch_bytes(void);
tl_status tl_pwconv_s8_ctx(const tl_ctx *scratch, const tl_conv_params *p, const tl_quant *q,
                           const tl_dims *in_dims, const int8_t *in,
                           const tl_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                           const tl_dims *out_dims, int8_t *out);
/* tl_conv_s8 with the same scratch, which its patches fast path hands to tl_pwconv_s8_ctx. */
tl_status tl_conv_s8_ctx(const tl_ctx *scratch, const tl_conv_params *p, const tl_quant *q,
                         const tl_dims *in_dims, const int8_t *in,
                         const tl_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                         const tl_dims *out_dims, int8_t *out);

/* ---------------------------------------------------------------- fixed-point math (tl_fixmath.c) */
/* exp(x) for x <= 0 given in Q16, result in Q24 (1.0 = 2^24). Max error ~2 LSB. */
int32_t tl_exp_q16_to_q24(int32_t x_q16);
/* ln(num / den) in Q16 for num, den > 0. */
int32_t tl_ln_ratio_q16(uint64_t num, uint64_t den);
/* floor(sqrt(v)). */
uint32_t tl_isqrt64(uint64_t v);
/* sin(2*pi*phase/2^32) in Q15 (+-32768 = +-1). */
int32_t tl_sin_turns_q15(uint32_t phase);


#endif /* TL_SUPPORT_H */
