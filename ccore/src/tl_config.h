/* Build configuration of the fast paths: derived once, here, from the compiler's predefined macros
 * (CMSIS-NN's arm_nn_math_types.h habit). Kernels branch on these macros only.
 *
 *   TL_HAVE_DSP       1 on Armv7E-M / Armv8-M Main with the DSP extension (Cortex-M4, M7, M33...):
 *                     kernels use SMLAD / SXTB16 through <arm_acle.h>.
 *   TL_HOST_CLONES    function attribute for the host's hot loops: on x86-64 with GCC (or clang) and
 *                     ELF ifunc support, each marked function is compiled twice (AVX2 and baseline
 *                     x86-64) and the loader picks one by CPUID. Integer results never depend on the
 *                     choice; a machine without AVX2 runs the baseline clone, never an illegal op.
 *   TL_HOST_WIDE      1 where TL_HOST_CLONES is on: hidden layers' weight gradients are computed for
 *                     16 output channels at once with AVX2 (tl_train_wide.c) when the CPU has it.
 *   TL_FORCE_GENERIC  (define on the command line) disables every fast path: plain C99 loops only.
 *                     Tests build both ways and require identical bits.
 *
 * Every fast path computes exactly the integers the portable loop computes: only the order of
 * exact int32/int64 additions changes (associative, no overflow by the bounds stated at each use).
 * Also here: small static inline helpers the kernels share (count leading zeros).
 */
#ifndef TL_CONFIG_H
#define TL_CONFIG_H

#include "tl_support.h"

/* ---------------------------------------------------------------- reference kernels */
/* TL_FORCE_GENERIC also routes the conv / dwconv / pwconv kernels through their reference loops
 * (TFLite's order, one accumulator per output), so a test can compare the restructured loops
 * and the DSP code against the specification itself. */
#if defined(TL_FORCE_GENERIC)
#define TL_REFERENCE_KERNELS 1
#else
#define TL_REFERENCE_KERNELS 0
#endif

/* ---------------------------------------------------------------- Arm DSP extension */
#if !defined(TL_FORCE_GENERIC) && defined(__ARM_FEATURE_DSP) && (__ARM_FEATURE_DSP == 1)
#define TL_HAVE_DSP 1
#include <arm_acle.h>
/* SXTB16 x, ROR #8 (bytes 1 and 3 of x as two int16): gcc 12 does not fold a rotation written
 * in C into the instruction's operand, so it is spelled out (also for SXTAB16 below). */
static inline int32_t tl_sxtb16_ror8(uint32_t x)
{
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}

/* SXTAB16 a, x, ROR #8: bytes 1 and 3 of x added to the two int16 lanes of a */
static inline uint32_t tl_sxtab16_ror8(uint32_t a, uint32_t x)
{
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
    return r;
}

/* Clamp each byte of b (four int8) to [lo, hi], given as lo4 / hi4 = the bound in every byte:
 * SSUB8 sets a GE flag per byte, SEL picks per byte. */
static inline uint32_t tl_clamp_s8x4(uint32_t b, uint32_t lo4, uint32_t hi4)
{
    (void)__ssub8(b, lo4);
    b = __sel(b, lo4); /* max(b, lo) */
    (void)__ssub8(hi4, b);
    return __sel(b, hi4); /* min(b, hi) */
}

static inline uint32_t tl_bytes4(int32_t lo)
{
    return (uint8_t)lo * 0x01010101u;
}

/* Requantization of one output channel, plus the output zero point, folded into one 64-bit
 * multiply-accumulate (SMLAL) and a shift, for the usual case shift <= -1 (right shift
 * r = -shift >= 1, no left shift).
 *
 * Double rounding (tl_requantize_inl): h = floor((x m + 2^30) / 2^31) (the SQRDMULH step; it
 * rounds half up for both signs), then (h + 2^(r-1) - [h < 0]) >> r (half away from zero). Two
 * nested floor divisions by powers of two compose into one, so
 *     result = floor((x m + 2^30 + 2^(30+r) - [h < 0] 2^31) / 2^(31+r)).
 * [h < 0] may be replaced by n = [x m < 0] (a sign bit: (x ^ m) < 0): they differ only when
 * x m is in [-2^30, 0), where h = 0 and both choices give 0 for r >= 1. The INT32_MIN * INT32_MIN
 * product needs no saturation here: floor((2^62 + 2^30 + 2^(30+r)) / 2^(31+r)) = 2^(31-r), which
 * is what the saturated h = INT32_MAX rounds to. |x m| <= 2^62 keeps the sum inside int64.
 * Single rounding (tl_requantize_single): (x m + 2^(30+r)) >> (31+r), never saturating for r >= 1.
 * With 31 + r >= 32 the result is the high word shifted right by rs = r - 1: SMLAL, ASR. Both
 * forms were checked against tl_requantize_inl / tl_requantize_single on ~2e8 random and edge-case
 * inputs. Adding zp 2^(31+r) to the constant adds zp to the result exactly; for rs <= 22 the high
 * word stays inside int32 (|x m| < 2^62 gives |high| <= 2^30, |zp| 2^rs <= 2^29). */
typedef struct {
    int64_t k;     /* 2^30 [double rounding] + 2^(30+r) + out_zp 2^(31+r) */
    int32_t mult;
    int32_t rs;    /* r - 1 in [0, 22]; -1 marks a channel the fast form does not cover */
} tl_rq;

static inline tl_rq tl_rq_make(const tl_conv_params *p, int32_t mult, int32_t shift)
{
    tl_rq q;
    const int32_t r = -shift;
    q.mult = mult;
    q.rs = r >= 1 && r <= 23 ? r - 1 : -1;
    q.k = q.rs < 0 ? 0
                   : ((int64_t)1 << (30 + r)) + (p->single_rounding ? 0 : ((int64_t)1 << 30)) +
                         (int64_t)p->out_zp * ((int64_t)1 << (31 + r));
    return q;
}

/* The sign mask tl_rq_fast needs: 2^31 is subtracted when x m < 0 under double rounding only. */
static inline uint32_t tl_rq_sign(const tl_conv_params *p)
{
    return p->single_rounding ? 0u : 0x80000000u;
}

/* tl_requantize_p + out_zp for a channel with rs >= 0 */
static inline int32_t tl_rq_fast(const tl_rq *q, uint32_t sign, int32_t x)
{
    const uint32_t n = (uint32_t)(x ^ q->mult) & sign;
    const int64_t v = (q->k - (int64_t)n) + (int64_t)x * q->mult;
    return (int32_t)(v >> 32) >> q->rs;
}

/* tl_rq_fast for a channel whose multiplier is positive (as TFLite's always are): x m < 0 exactly
 * when x < 0, so the sign test needs no EOR; with the mask a constant (0x80000000 or 0) it needs
 * no register either. */
static inline int32_t tl_rq_fast_pos(const tl_rq *q, uint32_t sign, int32_t x)
{
    const uint32_t n = (uint32_t)x & sign;
    const int64_t v = (q->k - (int64_t)n) + (int64_t)x * q->mult;
    return (int32_t)(v >> 32) >> q->rs;
}

/* tl_requantize_p(p, x, mult, shift) + p->out_zp where q = tl_rq_make(p, mult, shift) */
static inline int32_t tl_rq_apply(const tl_conv_params *p, const tl_rq *q, uint32_t sign, int32_t shift, int32_t x)
{
    return q->rs >= 0 ? tl_rq_fast(q, sign, x) : tl_requantize_p(p, x, q->mult, shift) + p->out_zp;
}
#else
#define TL_HAVE_DSP 0
#endif

/* ---------------------------------------------------------------- host x86-64 clones */
#if !defined(TL_FORCE_GENERIC) && !defined(TL_NO_CLONES) && defined(__GNUC__) && defined(__x86_64__) && \
    defined(__SSE2__) && defined(__ELF__) && defined(__linux__)
#define TL_HOST_CLONES __attribute__((target_clones("avx2", "default")))
/* the many-channel weight-gradient path of tl_train_wide.c (AVX2 intrinsics, checked at run time) */
#define TL_HOST_WIDE 1
#else
#define TL_HOST_CLONES
#define TL_HOST_WIDE 0
#endif

/* ---------------------------------------------------------------- bit helpers */
/* Number of significant bits of v (0 for 0): bit_length. */
static inline int tl_bit_length64(uint64_t v)
{
#if defined(__GNUC__)
    return v ? 64 - __builtin_clzll(v) : 0;
#else
    int n = 0;
    while (v) {
        v >>= 1;
        n++;
    }
    return n;
#endif
}

static inline int tl_bit_length32(uint32_t v)
{
#if defined(__GNUC__) && defined(__SIZEOF_INT__) && (__SIZEOF_INT__ == 4)
    return v ? 32 - __builtin_clz((unsigned int)v) : 0;
#else
    return tl_bit_length64(v);
#endif
}

#endif /* TL_CONFIG_H */
