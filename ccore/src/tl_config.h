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
 *                     16 output channels at once with AVX2 (tl_lls_x86.c) when the CPU has it.
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
#include "tl_arm.h"
#else
#define TL_HAVE_DSP 0
#endif

/* ---------------------------------------------------------------- host x86-64 clones */
#if !defined(TL_FORCE_GENERIC) && !defined(TL_NO_CLONES) && defined(__GNUC__) && defined(__x86_64__) && \
    defined(__SSE2__) && defined(__ELF__) && defined(__linux__)
#define TL_HOST_CLONES __attribute__((target_clones("avx2", "default")))
/* the many-channel weight-gradient path of tl_lls_x86.c (AVX2 intrinsics, checked at run time) */
#define TL_HOST_WIDE 1
#else
#define TL_HOST_CLONES
#define TL_HOST_WIDE 0
#endif
/* Division by a reused divisor (tl_lls.c) corrects its estimate without branches on hosts (there
 * the loop's branch mispredicts often) and with a loop on microcontrollers (cheaper there). */
#define TL_DIV_BRANCHLESS TL_HOST_WIDE

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

/* The high 64 bits of the 128-bit product a b: UMULL/UMAAL on the DSP extension, one MUL where
 * the target has a 128-bit type (x86-64, AArch64), else four 32 x 32 products. */
static inline uint64_t tl_umulh64(uint64_t a, uint64_t b)
{
#if TL_HAVE_DSP
    return tl_arm_umulh64(a, b);
#elif defined(__SIZEOF_INT128__) && defined(__GNUC__)
    __extension__ typedef unsigned __int128 u128;
    return (uint64_t)(((u128)a * b) >> 64);
#else
    const uint64_t a0 = (uint32_t)a, a1 = a >> 32, b0 = (uint32_t)b, b1 = b >> 32;
    const uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
    const uint64_t mid = (p00 >> 32) + (uint32_t)p01 + (uint32_t)p10;
    return p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
#endif
}

#endif /* TL_CONFIG_H */
