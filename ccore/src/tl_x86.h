/* AVX2 helpers shared by the host (x86-64) fast paths; included only where tl_config.h sets
 * TL_HOST_WIDE, by functions compiled with __attribute__((target("avx2"))) and called after
 * tl_x86_avx2() said yes. Each helper computes exactly what its scalar twin computes. */
#ifndef TL_X86_H
#define TL_X86_H

#include "tl_config.h"

#if TL_HOST_WIDE
#include <immintrin.h>

#define TL_AVX2 __attribute__((target("avx2")))

static inline int tl_x86_avx2(void)
{
    return __builtin_cpu_supports("avx2");
}

/* AVX-512 F/VL/BW paths (a few loops that want 64-bit lanes); -DTL_NO_AVX512 keeps them off so a
 * test can hold the AVX2 paths to the same bits on an AVX-512 machine. */
#define TL_AVX512 __attribute__((target("avx2,avx512f,avx512vl,avx512bw")))

static inline int tl_x86_avx512(void)
{
#if defined(TL_NO_AVX512)
    return 0;
#else
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw");
#endif
}

/* AVX512-VNNI's VPDPWSSD on 256-bit registers (with AVX512-VL); off with -DTL_NO_AVX512 too. */
static inline int tl_x86_vnni(void)
{
#if defined(TL_NO_AVX512)
    return 0;
#else
    return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl");
#endif
}

/* acc + VPMADDWD(a, b): with vnni != 0 the one instruction VPDPWSSD, the same integers (pairs of
 * int16 products summed into int32 lanes with wrap-around; the kernels stay far from it). Inline
 * assembly, so the caller needs no AVX-512 target; callers pass vnni as a loop invariant. */
static inline TL_AVX2 __m256i tl_dot_acc(__m256i acc, __m256i a, __m256i b, int vnni)
{
    if (vnni) {
        __asm__("vpdpwssd %2, %1, %0" : "+x"(acc) : "x"(a), "x"(b));
        return acc;
    }
    return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
}

/* tl_requantize_inl on eight lanes, for multipliers >= 0 (every valid quantized multiplier is 0
 * or in [2^30, 2^31); the one saturating case of the high multiply, INT32_MIN x INT32_MIN, needs a
 * negative multiplier, so callers check mult >= 0 and otherwise take the scalar loop).
 * The high multiply: TFLite's (ab + nudge) / 2^31, truncating, equals floor((ab + 2^30) / 2^31)
 * for both signs of ab (for ab < 0 the nudge 1 - 2^30 plus the truncation's 2^31 - 1 is 2^30),
 * and that floor's low 32 bits are those of a logical 64-bit shift by 31. */
static inline TL_AVX2 __m256i tl_requantize_x8(__m256i x, __m256i mult, __m256i left, __m256i right)
{
    const __m256i xs = _mm256_sllv_epi32(x, left);
    const __m256i half = _mm256_set1_epi64x((int64_t)1 << 30);
    const __m256i even = _mm256_srli_epi64(_mm256_add_epi64(_mm256_mul_epi32(xs, mult), half), 31);
    const __m256i odd = _mm256_srli_epi64(
        _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(xs, 32), _mm256_srli_epi64(mult, 32)), half), 31);
    const __m256i hi = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
    /* rounding divide by 2^right, half away from zero */
    const __m256i one = _mm256_set1_epi32(1);
    const __m256i mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, right), one);
    const __m256i remainder = _mm256_and_si256(hi, mask);
    const __m256i threshold = _mm256_add_epi32(_mm256_srli_epi32(mask, 1), _mm256_srli_epi32(hi, 31));
    return _mm256_sub_epi32(_mm256_srav_epi32(hi, right), _mm256_cmpgt_epi32(remainder, threshold));
}

/* Per-channel requantization parameters of eight channels, as tl_requantize_inl splits them. */
static inline TL_AVX2 void tl_requant_params_x8(const int32_t *shift, __m256i *left, __m256i *right)
{
    const __m256i s = _mm256_loadu_si256((const __m256i *)shift);
    const __m256i zero = _mm256_setzero_si256();
    *left = _mm256_max_epi32(s, zero);
    *right = _mm256_max_epi32(_mm256_sub_epi32(zero, s), zero);
}
/* n int8 widened to int16 (dst[n] = 0 when n is odd, so int32 views read whole pairs); returns
 * their sum. */
static inline TL_AVX2 int32_t tl_widen_s8(const int8_t *x, int32_t n, int16_t *dst)
{
    __m256i sum = _mm256_setzero_si256();
    int32_t k = 0;
    for (; k + 16 <= n; k += 16) {
        const __m256i v = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(x + k)));
        _mm256_storeu_si256((__m256i *)(dst + k), v);
        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(v, _mm256_set1_epi16(1)));
    }
    if (k + 8 <= n) {
        const __m128i v = _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(x + k)));
        _mm_storeu_si128((__m128i *)(dst + k), v);
        sum = _mm256_add_epi32(sum, _mm256_inserti128_si256(_mm256_setzero_si256(), _mm_madd_epi16(v, _mm_set1_epi16(1)), 0));
        k += 8;
    }
    int32_t t[8], total = 0;
    _mm256_storeu_si256((__m256i *)t, sum);
    for (int32_t q = 0; q < 8; q++)
        total += t[q];
    for (; k < n; k++) {
        dst[k] = x[k];
        total += x[k];
    }
    if (n & 1)
        dst[n] = 0;
    return total;
}

/* r[0..8) as an 8x8 matrix of 32-bit lanes, transposed in place (row j becomes column j). */
static inline TL_AVX2 void tl_transpose8x8_epi32(__m256i *r)
{
    __m256i t[8], u[8];
    for (int q = 0; q < 8; q += 2) {
        t[q] = _mm256_unpacklo_epi32(r[q], r[q + 1]);
        t[q + 1] = _mm256_unpackhi_epi32(r[q], r[q + 1]);
    }
    for (int q = 0; q < 8; q += 4) {
        u[q] = _mm256_unpacklo_epi64(t[q], t[q + 2]);
        u[q + 1] = _mm256_unpackhi_epi64(t[q], t[q + 2]);
        u[q + 2] = _mm256_unpacklo_epi64(t[q + 1], t[q + 3]);
        u[q + 3] = _mm256_unpackhi_epi64(t[q + 1], t[q + 3]);
    }
    for (int q = 0; q < 4; q++) {
        r[q] = _mm256_permute2x128_si256(u[q], u[q + 4], 0x20);
        r[q + 4] = _mm256_permute2x128_si256(u[q], u[q + 4], 0x31);
    }
}

/* Eight int32 lanes already clamped to [-128, 127] stored as eight int8 (the saturating packs
 * change nothing in that range). */
static inline TL_AVX2 void tl_store_s8x8(int8_t *o, __m256i v)
{
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    _mm_storel_epi64((__m128i *)o, _mm_packs_epi16(w, w));
}
#endif /* TL_HOST_WIDE */

#endif /* TL_X86_H */
