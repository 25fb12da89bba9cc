/* Cortex-M DSP-extension helpers (Armv7E-M / Armv8-M Main) shared by the kernels and the LLS
 * fast paths; included by tl_config.h only where it sets TL_HAVE_DSP. Each helper computes exactly
 * what its portable twin in C computes; inline assembly where gcc has no intrinsic for the
 * instruction or does not fold the operand form. */
#ifndef TL_ARM_H
#define TL_ARM_H

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

/* An unaligned 32-bit load (LDR takes unaligned addresses on these cores). */
static inline uint32_t tl_rd32(const void *p)
{
    uint32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}

/* PKHBT a, b, LSL #16 (low halves of a and b), PKHTB b, a, ASR #16 (high halves of a and b):
 * gcc has no intrinsic for them. */
static inline int32_t tl_pk_bt(int32_t a, int32_t b)
{
    int32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

static inline int32_t tl_pk_tb(int32_t a, int32_t b)
{
    int32_t r;
    __asm__("pkhtb %0, %2, %1, asr #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

/* The high half of the 128-bit product a b with UMULL and three UMAAL (x + y*z + w never
 * overflows 64 bits): a0 b0 = x1:x0, a1 b0 + x1 = y1:y0, a0 b1 + y0 = z1:z0, then
 * a1 b1 + y1 + z1 is the high half. */
static inline uint64_t tl_arm_umulh64(uint64_t a, uint64_t b)
{
    uint32_t x0, x1, y0, y1 = 0, z0, z1 = 0;
    const uint32_t a0 = (uint32_t)a, a1 = (uint32_t)(a >> 32), b0 = (uint32_t)b, b1 = (uint32_t)(b >> 32);
    __asm__("umull %0, %1, %2, %3" : "=&r"(x0), "=&r"(x1) : "r"(a0), "r"(b0));
    (void)x0;
    y0 = x1;
    __asm__("umaal %0, %1, %2, %3" : "+&r"(y0), "+&r"(y1) : "r"(a1), "r"(b0));
    z0 = y0;
    __asm__("umaal %0, %1, %2, %3" : "+&r"(z0), "+&r"(z1) : "r"(a0), "r"(b1));
    (void)z0;
    __asm__("umaal %0, %1, %2, %3" : "+&r"(y1), "+&r"(z1) : "r"(a1), "r"(b1));
    return ((uint64_t)z1 << 32) | y1;
}

/* Assembler macros shared by the kernels' assembly loops (tl_pwconv_s8.c, tl_dwconv_s8.c), as
 * text for a top-level __asm__ (each file defines them at its start and purges them at its end).
 *   TL_ASM_RQ acc, dbl, rs   acc = tl_rq_fast_pos(q, sign, acc) with q = (k lo, k hi, mult) in
 *                            r0, r1, r2 and q->rs in register rs; dbl: double rounding (sign =
 *                            2^31), else single (sign = 0). Clobbers r8, r11.
 *   TL_ASM_PACK4 off         r4..r7 saturated to int8 (SSAT), packed into r4 (r4 the low byte),
 *                            then every byte clamped to [lo, hi] with lo4, hi4 read from
 *                            [sp, #off] (tl_clamp_s8x4). Clobbers r0, r1, r8.
 *   TL_ASM_ENTER name        a global Thumb function void name(const args *a), in its own section
 *                            (--gc-sections): saves r4-r11 and lr, copies the first eight words of
 *                            *a to a frame at [sp, #0..28] and leaves r0 at the ninth;
 *   TL_ASM_LEAVE name        its return. */
#define TL_ASM_MACROS                                                                                     \
    ".syntax unified\n"                                                                                   \
    ".thumb\n"                                                                                            \
    ".macro TL_ASM_RQ acc, dbl, rs\n"                                                                     \
    "  .if \\dbl\n"                                                                                       \
    "  and    r8, \\acc, #0x80000000\n"                                                                   \
    "  subs   r11, r0, r8\n"                                                                              \
    "  sbc    r8, r1, #0\n"                                                                               \
    "  .else\n"                                                                                           \
    "  mov    r11, r0\n"                                                                                  \
    "  mov    r8, r1\n"                                                                                   \
    "  .endif\n"                                                                                          \
    "  smlal  r11, r8, \\acc, r2\n"                                                                       \
    "  asr    \\acc, r8, \\rs\n"                                                                          \
    ".endm\n"                                                                                             \
    ".macro TL_ASM_PACK4 off\n"                                                                           \
    "  ssat   r4, #8, r4\n"                                                                               \
    "  ssat   r5, #8, r5\n"                                                                               \
    "  ssat   r6, #8, r6\n"                                                                               \
    "  ssat   r7, #8, r7\n"                                                                               \
    "  uxtb   r4, r4\n"                                                                                   \
    "  bfi    r4, r5, #8, #8\n"                                                                           \
    "  bfi    r4, r6, #16, #8\n"                                                                          \
    "  bfi    r4, r7, #24, #8\n"                                                                          \
    "  ldrd   r0, r1, [sp, #\\off]\n"                                                                     \
    "  ssub8  r8, r4, r0\n"                                                                               \
    "  sel    r4, r4, r0\n"                                                                               \
    "  ssub8  r8, r1, r4\n"                                                                               \
    "  sel    r4, r4, r1\n"                                                                               \
    ".endm\n"                                                                                             \
    ".macro TL_ASM_ENTER name\n"                                                                          \
    "  .section .text.\\name,\"ax\",%progbits\n"                                                          \
    "  .global \\name\n"                                                                                  \
    "  .type \\name, %function\n"                                                                         \
    "  .thumb_func\n"                                                                                     \
    "  .p2align 2\n"                                                                                      \
    "\\name:\n"                                                                                           \
    "  push   {r4, r5, r6, r7, r8, r9, r10, r11, lr}\n"                                                   \
    "  sub    sp, sp, #32\n"                                                                              \
    "  ldmia  r0!, {r1, r2, r3, r4, r5, r6, r7, r8}\n"                                                    \
    "  stmia  sp, {r1, r2, r3, r4, r5, r6, r7, r8}\n"                                                     \
    ".endm\n"                                                                                             \
    ".macro TL_ASM_LEAVE name\n"                                                                          \
    "  add    sp, sp, #32\n"                                                                              \
    "  pop    {r4, r5, r6, r7, r8, r9, r10, r11, pc}\n"                                                   \
    "  .size \\name, . - \\name\n"                                                                        \
    "  .text\n"                                                                                           \
    ".endm\n"
#define TL_ASM_PURGE ".purgem TL_ASM_RQ\n.purgem TL_ASM_PACK4\n.purgem TL_ASM_ENTER\n.purgem TL_ASM_LEAVE\n"

#endif /* TL_ARM_H */
