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
/* rotate right; gcc folds tl_ror(x, 8) into SXTB16's ROR #8 operand */
static inline uint32_t tl_ror(uint32_t x, uint32_t r)
{
    return (x >> r) | (x << (32u - r));
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
