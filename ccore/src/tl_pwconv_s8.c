/* 1x1 convolution, stride 1, no padding: a matrix product (pixels x in_c) . (in_c x out_c).
 * Same arithmetic as tl_conv_s8 with the spatial loops folded away. */
#include "tl_config.h"
#include "tl_x86.h"

#define TL_PW_CBLK 32 /* output channels whose zp * sum(w) is kept on the stack */

/* sum (x - zp) w = sum x w - zp sum w: the inner loop becomes a plain int8 dot product; both
 * sides are exact in int32 (|sum| <= 255 * 127 * in_c), and every accumulator below is
 * assembled in the same order as the reference: (sum x w - zp sum w) + bias. */
static inline int32_t finish(const tl_conv_params *p, const tl_quant *q, const int32_t *bias, int32_t c,
                             int32_t dot, int32_t zpw)
{
    int32_t acc = dot - zpw;
    if (bias)
        acc += bias[c];
    acc = tl_add_zp(tl_requantize_p(p, acc, q->mult[c], q->shift[c]), p->out_zp);
    return TL_CLAMP(acc, p->act_min, p->act_max);
}

#if TL_HOST_WIDE
#define TL_PW_X86_MAX_W 65536 /* in_c x out_c the packed int16 weights may hold (128 KB of scratch) */
#define TL_PW_X86_MAX_C 1024  /* output channels */

/* Host AVX2: VPMADDWD on int16 pairs of input channels, 4 pixels x 16 output channels per tile,
 * weights packed once per call as (channel pair, channel) lanes, inputs widened per 4-pixel row
 * block; requantization eight lanes at a time (tl_requantize_x8). Exact: |x w| <= 2^14, so the
 * int32 sums cannot overflow for in_c < 2^16. Returns 0 (nothing written) where it does not apply. */
/* the int16 pair at x, as a 32-bit lane in all eight positions */
static inline TL_AVX2 __m256i bcast_pair(const int16_t *x)
{
    int32_t v;
    __builtin_memcpy(&v, x, 4);
    return _mm256_set1_epi32(v);
}

static TL_AVX2 int pw_x86(const tl_ctx *scratch, const tl_conv_params *p, const tl_quant *q, int32_t pixels,
                          int32_t ic, int32_t oc, const int8_t *in, const int8_t *filter, const int32_t *bias,
                          int8_t *out)
{
    const int32_t kp = (ic + 1) / 2, ocb = (oc + 15) / 16;
    if (!scratch || !scratch->buf || scratch->size < tl_pwconv_s8_scratch_bytes() || !tl_x86_avx2() || p->single_rounding || (int64_t)kp * 2 * ocb * 16 > TL_PW_X86_MAX_W || kp > 512 ||
        ocb * 16 > TL_PW_X86_MAX_C)
        return 0;
    for (int32_t c = 0; c < oc; c++)
        if (q->mult[c] < 0)
            return 0;
    /* [block][pair][16]: the packed weights, in the caller's scratch (32-aligned inside it) */
    int32_t *wp = (int32_t *)(((uintptr_t)scratch->buf + 31u) & ~(uintptr_t)31u);
    int32_t zb[TL_PW_X86_MAX_C] __attribute__((aligned(32))); /* bias - in_zp sum w */
    int16_t row[1024 + 2] __attribute__((aligned(32))); /* one widened weight row, read as int32 pairs */
    const int32_t kp8 = (ic / 16) * 8; /* pairs packed eight at a time by transposition */
    for (int32_t b = 0; b < ocb; b++) {
        for (int32_t cc = 0; cc < 16; cc++) {
            const int32_t c = b * 16 + cc;
            int32_t wsum = 0;
            if (c < oc) {
                wsum = tl_widen_s8(filter + c * ic, ic, row);
                for (int32_t k = kp8; k < kp; k++)
                    __builtin_memcpy(&wp[(b * kp + k) * 16 + cc], row + 2 * k, 4);
            } else {
                for (int32_t k = kp8; k < kp; k++)
                    wp[(b * kp + k) * 16 + cc] = 0;
            }
            /* finish() forms (dot - zp sum w) + bias; int32 adds, in that order */
            zb[c] = (int32_t)((uint32_t)(-(uint32_t)(p->in_zp * wsum)) + (bias ? (uint32_t)bias[c < oc ? c : 0] : 0u));
        }
        /* pairs [0, kp8): 8 channels x 8 pairs widened, then an 8x8 transpose of 32-bit lanes */
        for (int32_t k = 0; k < kp8; k += 8) {
            for (int32_t h = 0; h < 2; h++) {
                __m256i r[8];
                for (int32_t j = 0; j < 8; j++) {
                    const int32_t c = b * 16 + h * 8 + j;
                    r[j] = c < oc ? _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(filter + c * ic + 2 * k)))
                                  : _mm256_setzero_si256();
                }
                tl_transpose8x8_epi32(r);
                for (int32_t j = 0; j < 8; j++)
                    _mm256_store_si256((__m256i *)(wp + (b * kp + k + j) * 16 + h * 8), r[j]);
            }
        }
    }
    const int vnni = tl_x86_vnni();
    const __m256i ozp = _mm256_set1_epi32(p->out_zp);
    const __m256i amin = _mm256_set1_epi32(p->act_min), amax = _mm256_set1_epi32(p->act_max);
    int16_t xw[4][1024 + 2] __attribute__((aligned(32))); /* four widened input rows (int16 pairs) */
    for (int32_t px0 = 0; px0 < pixels; px0 += 4) {
        const int32_t np = TL_MIN(4, pixels - px0);
        for (int32_t r = 0; r < 4; r++)
            tl_widen_s8(in + (px0 + (r < np ? r : 0)) * ic, ic, xw[r]);
        for (int32_t b = 0; b < ocb; b++) {
            __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00;
            __m256i a20 = a00, a21 = a00, a30 = a00, a31 = a00;
            const int32_t *wb = wp + b * kp * 16;
            for (int32_t k = 0; k < kp; k++) {
                const __m256i w0 = _mm256_load_si256((const __m256i *)(wb + k * 16));
                const __m256i w1 = _mm256_load_si256((const __m256i *)(wb + k * 16 + 8));
                __m256i x = bcast_pair(xw[0] + 2 * k);
                a00 = tl_dot_acc(a00, x, w0, vnni);
                a01 = tl_dot_acc(a01, x, w1, vnni);
                x = bcast_pair(xw[1] + 2 * k);
                a10 = tl_dot_acc(a10, x, w0, vnni);
                a11 = tl_dot_acc(a11, x, w1, vnni);
                x = bcast_pair(xw[2] + 2 * k);
                a20 = tl_dot_acc(a20, x, w0, vnni);
                a21 = tl_dot_acc(a21, x, w1, vnni);
                x = bcast_pair(xw[3] + 2 * k);
                a30 = tl_dot_acc(a30, x, w0, vnni);
                a31 = tl_dot_acc(a31, x, w1, vnni);
            }
            const __m256i acc[4][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
            const int32_t c0 = b * 16, nc = TL_MIN(16, oc - c0);
            int32_t mult[16], shift[16];
            for (int32_t cc = 0; cc < 16; cc++) {
                mult[cc] = cc < nc ? q->mult[c0 + cc] : 0;
                shift[cc] = cc < nc ? q->shift[c0 + cc] : 0;
            }
            for (int32_t h = 0; h < 2; h++) {
                __m256i left, right;
                tl_requant_params_x8(shift + 8 * h, &left, &right);
                const __m256i m = _mm256_loadu_si256((const __m256i *)(mult + 8 * h));
                const __m256i z = _mm256_load_si256((const __m256i *)(zb + c0 + 8 * h));
                for (int32_t r = 0; r < np; r++) {
                    __m256i v = tl_requantize_x8(_mm256_add_epi32(acc[r][h], z), m, left, right);
                    v = _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(v, ozp), amin), amax);
                    int8_t *o = out + (px0 + r) * oc + c0 + 8 * h;
                    if (8 * h + 8 <= nc) {
                        tl_store_s8x8(o, v);
                    } else {
                        int32_t t[8];
                        _mm256_storeu_si256((__m256i *)t, v);
                        for (int32_t cc = 0; 8 * h + cc < nc; cc++)
                            o[cc] = (int8_t)t[cc];
                    }
                }
            }
        }
    }
    return 1;
}
#endif

#if TL_HAVE_DSP
#define TL_PW_WIDE 128 /* input channels of a pixel pair widened at a time (512 B of stack) */

static inline uint32_t read_s8x4(const int8_t *p)
{
    uint32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}

/* Two outputs of neighbouring channels, clamped and stored as one halfword: SSAT to int8 (the
 * activation range lies inside it, so clamping afterwards gives the same bytes), then the clamp
 * to [lo, hi] on both bytes at once. */
static inline void pw_store2(int8_t *o, int32_t v0, int32_t v1, uint32_t lo4, uint32_t hi4)
{
    const uint32_t b = ((uint32_t)__ssat(v0, 8) & 0xFFu) | ((uint32_t)__ssat(v1, 8) << 8);
    const uint16_t h = (uint16_t)tl_clamp_s8x4(b, lo4, hi4);
    __builtin_memcpy(o, &h, 2);
}

static inline int8_t pw_clamp(int32_t v, int32_t lo, int32_t hi)
{
    return (int8_t)TL_CLAMP(v, lo, hi);
}

/* Two pixels x two output channels per pass, CMSIS-NN style: the pair's inputs are widened to
 * int16 once (SXTB16, in the even/odd order SXTB16 gives the weights), so the inner step over
 * four input channels is one LDR and two SXTB16 per weight row and eight SMLAD, 16 MACs. The
 * per-channel constants (bias - zp sum(w), the requantization as tl_rq) are made once per block.
 * Accumulators start at bias - zp sum(w): the same int32 sum as the reference, reordered. */
/* tl_rq_apply, without the test when every channel of the block takes the fast form */
/* all_fast: 0 (any channel), PW_FAST_DOUBLE or PW_FAST_SINGLE (every channel of the block has the
 * fast form and a positive multiplier; the rounding as a constant) */
#define PW_FAST_DOUBLE 1
#define PW_FAST_SINGLE 2
#define PW_RQ(c, acc)                                                                                       \
    (all_fast ? tl_rq_fast_pos(&rq[c], all_fast == PW_FAST_DOUBLE ? 0x80000000u : 0u, acc)                   \
              : tl_rq_apply(p, &rq[c], sg, shift[c], acc))

/* One group of pw_dot2x2's loop (four input channels of the pixel pair against one word of each
 * weight row): LDM of the widened pair, then eight SMLAD. The loop body holds it twice. */
#define PW_DOT_GROUP \
    "ldmia   %[xp]!, {r0, r1, r2, r3}\n\t" \
    "ldr     %[w], [%[wa]], #4\n\t" \
    "sxtb16  %[t], %[w]\n\t" \
    "sxtb16  %[w], %[w], ror #8\n\t" \
    "smlad   %[a00], %[x0], %[t], %[a00]\n\t" \
    "smlad   %[a00], %[x1], %[w], %[a00]\n\t" \
    "smlad   %[a10], %[x2], %[t], %[a10]\n\t" \
    "smlad   %[a10], %[x3], %[w], %[a10]\n\t" \
    "ldr     %[w], [%[wb]], #4\n\t" \
    "sxtb16  %[t], %[w]\n\t" \
    "sxtb16  %[w], %[w], ror #8\n\t" \
    "smlad   %[a01], %[x0], %[t], %[a01]\n\t" \
    "smlad   %[a01], %[x1], %[w], %[a01]\n\t" \
    "smlad   %[a11], %[x2], %[t], %[a11]\n\t" \
    "smlad   %[a11], %[x3], %[w], %[a11]\n\t"

/* The inner product of pw_pair_chunk: for each group of four input channels, the widened pair
 * (x0, x1 of pixel a; x2, x3 of pixel b) against one word of each weight row, eight SMLAD. Written
 * as asm because gcc (12) loads the pair with three loads plus a pointer add and keeps the loop
 * end on the stack (21 instructions per 16 MACs): here one LDM with writeback, two groups per
 * pass, 33 per 32 MACs. The loop needs 13 registers, so its end stays in memory (14 are more than
 * gcc can give an asm). The x registers are pinned to r0-r3
 * since LDM fills its list in register order. ng >= 1 groups, xend = xw + 4 ng. The same SMLADs
 * in the same order as the C it replaces. */
static inline __attribute__((always_inline)) void pw_dot2x2(const int32_t *xw, const int32_t *xend,
                                                            const int8_t *wa, const int8_t *wb, int32_t *p00,
                                                            int32_t *p01, int32_t *p10, int32_t *p11)
{
    register int32_t x0 __asm__("r0");
    register int32_t x1 __asm__("r1");
    register int32_t x2 __asm__("r2");
    register int32_t x3 __asm__("r3");
    int32_t a00 = *p00, a01 = *p01, a10 = *p10, a11 = *p11;
    uint32_t w, t;
    __asm__ volatile("ldr     %[t], %[xend]\n\t" /* an odd group count (16 bytes each) enters at 2 */
                     "sub     %[t], %[t], %[xp]\n\t"
                     "tst     %[t], #16\n\t"
                     "bne     2f\n\t"
                     "1:\n\t"
                     PW_DOT_GROUP
                     "2:\n\t"
                     PW_DOT_GROUP
                     "ldr     %[t], %[xend]\n\t"
                     "cmp     %[xp], %[t]\n\t"
                     "bne     1b"
                     : [a00] "+r"(a00), [a01] "+r"(a01), [a10] "+r"(a10), [a11] "+r"(a11), [xp] "+r"(xw),
                       [wa] "+r"(wa), [wb] "+r"(wb), [x0] "=&r"(x0), [x1] "=&r"(x1), [x2] "=&r"(x2),
                       [x3] "=&r"(x3), [w] "=&r"(w), [t] "=&r"(t)
                     : [xend] "m"(xend)
                     : "cc", "memory");
    *p00 = a00;
    *p01 = a01;
    *p10 = a10;
    *p11 = a11;
}

/* The channel-pair loop of one pixel pair in the common case, in assembly: the whole input in one
 * chunk (ic a multiple of four, at most TL_PW_WIDE), an even channel count, every channel of the
 * block in the fast requantization form. In C (pw_pair_chunk) the bookkeeping around the dot
 * product cost ~80 instructions per pixel pair and channel pair, a third of the layer at 8-32
 * input channels, because gcc spills most of its state around the 13 registers of pw_dot2x2;
 * here it is ~50: the loop's state sits in a frame read with LDRD/LDM, the end of the widened
 * pair (xend) stays in lr, the channel constants are read four at a time (tl_rq is k, mult, rs:
 * one LDM), and the four outputs are packed into one word (BFI) and clamped with one SSUB8/SEL
 * pair. It also widens the pixel pair first (SXTB16 of each word, four words stored by one STM)
 * and runs the dot product four groups of four channels per pass. The arithmetic is
 * pw_pair_chunk's: the same SMLADs in the same order, tl_rq_fast_pos (k - [x < 0] 2^31 under
 * double rounding, then SMLAL and the shift), SSAT to int8, the bytewise clamp to [lo, hi]. */
typedef struct {
    const int32_t *xw;  /* the widened pixel pair (pw_pair_chunk's layout), 4 words per group */
    const tl_rq *rq;    /* the block's channels, two per pass */
    const int32_t *cb;  /* bias - zp sum(w) per channel */
    int8_t *oa;         /* pixel a's output at the block's first channel (pixel b's: oa + oc) */
    int32_t oc;
    uint32_t lo4, hi4;  /* the activation range in every byte */
    const tl_rq *rend;  /* rq + nc */
    const int8_t *w;    /* the block's first weight row (rows adjacent, ic bytes each) */
    const int8_t *xa;   /* pixel a's input (pixel b's: xa + ic), widened into xw first */
    const int32_t *xend; /* xw + ic */
} pw_pairs_args;       /* (w, xa, xend: LDM fills r9, r12, lr in that order) */

void tl_pw_pairs_dbl(const pw_pairs_args *a);    /* double rounding (TFLite's) */
void tl_pw_pairs_single(const pw_pairs_args *a); /* single rounding */

/* x0-x3 r0-r3 (LDM order), sums r4 (a, c) r5 (a, c+1) r6 (b, c) r7 (b, c+1), xp r8, wa r9, wb r10 */
__asm__(TL_ASM_MACROS
        ".macro TL_PW_GROUP\n"
        "  ldmia  r8!, {r0, r1, r2, r3}\n"
        "  ldr    r11, [r9], #4\n"
        "  sxtb16 r12, r11\n"
        "  sxtb16 r11, r11, ror #8\n"
        "  smlad  r4, r0, r12, r4\n"
        "  smlad  r4, r1, r11, r4\n"
        "  smlad  r6, r2, r12, r6\n"
        "  smlad  r6, r3, r11, r6\n"
        "  ldr    r11, [r10], #4\n"
        "  sxtb16 r12, r11\n"
        "  sxtb16 r11, r11, ror #8\n"
        "  smlad  r5, r0, r12, r5\n"
        "  smlad  r5, r1, r11, r5\n"
        "  smlad  r7, r2, r12, r7\n"
        "  smlad  r7, r3, r11, r7\n"
        ".endm\n"
        /* frame: [0] xw [4] rq [8] cb [12] oa [16] oc [20] lo4 [24] hi4 [28] rend */
        ".macro TL_PW_PAIRS name, dbl\n"
        "  TL_ASM_ENTER \\name\n"
        "  ldmia  r0, {r9, r12, lr}\n"        /* wa, xa, xend */
        "  mov    r8, r1\n"                    /* the pixel pair widened: xw[4g..4g+3] = */
        "  sub    r10, lr, r8\n"               /* SXTB16 of pixel a's word g, the same ROR 8, */
        "  add    r10, r12, r10, lsr #2\n"     /* then pixel b's (xb = xa + ic) */
        "0:\n"
        "  ldr    r11, [r12], #4\n"
        "  ldr    r4, [r10], #4\n"
        "  sxtb16 r0, r11\n"
        "  sxtb16 r1, r11, ror #8\n"
        "  sxtb16 r2, r4\n"
        "  sxtb16 r3, r4, ror #8\n"
        "  stmia  r8!, {r0, r1, r2, r3}\n"
        "  cmp    r8, lr\n"
        "  bne    0b\n"
        "1:\n"                                  /* a channel pair */
        "  ldr    r12, [sp, #8]\n"
        "  ldmia  r12!, {r4, r5}\n"
        "  str    r12, [sp, #8]\n"
        "  mov    r6, r4\n"
        "  mov    r7, r5\n"
        "  ldr    r8, [sp, #0]\n"
        "  sub    r12, lr, r8\n"                /* 4 ic */
        "  add    r10, r9, r12, lsr #2\n"       /* wb = wa + ic */
        "  ands   r12, r12, #48\n"              /* 16 (groups mod 4): four per pass, */
        "  beq    2f\n"                         /* the rest entering part way */
        "  cmp    r12, #32\n"
        "  beq    4f\n"
        "  bhi    3f\n"
        "  b      5f\n"
        "2:\n"
        "  TL_PW_GROUP\n"
        "3:\n"
        "  TL_PW_GROUP\n"
        "4:\n"
        "  TL_PW_GROUP\n"
        "5:\n"
        "  TL_PW_GROUP\n"
        "  cmp    r8, lr\n"
        "  bne    2b\n"
        "  mov    r9, r10\n"                    /* wb ended at the next pair's first row */
        "  ldr    r12, [sp, #4]\n"
        "  ldmia  r12!, {r0, r1, r2, r3}\n"
        "  TL_ASM_RQ r4, \\dbl, r3\n"
        "  TL_ASM_RQ r6, \\dbl, r3\n"
        "  ldmia  r12!, {r0, r1, r2, r3}\n"
        "  TL_ASM_RQ r5, \\dbl, r3\n"
        "  TL_ASM_RQ r7, \\dbl, r3\n"
        "  str    r12, [sp, #4]\n"
        "  TL_ASM_PACK4 20\n"
        "  ldrd   r2, r3, [sp, #12]\n"
        "  lsr    r1, r4, #16\n"
        "  strh   r1, [r2, r3]\n"               /* pixel b */
        "  strh   r4, [r2], #2\n"               /* pixel a */
        "  str    r2, [sp, #12]\n"
        "  ldr    r0, [sp, #28]\n"
        "  cmp    r12, r0\n"
        "  bne    1b\n"
        "  TL_ASM_LEAVE \\name\n"
        ".endm\n"
        "TL_PW_PAIRS tl_pw_pairs_dbl, 1\n"
        "TL_PW_PAIRS tl_pw_pairs_single, 0\n"
        ".purgem TL_PW_GROUP\n"
        ".purgem TL_PW_PAIRS\n"
        TL_ASM_PURGE);

/* Input channels [k0, k0 + kn) of the pixel pair (xa, xb) against the block's nc channels. The
 * widened pair is kept to TL_PW_WIDE channels to bound the stack (this frame is on the deepest
 * call chain, under conv_patches); wider inputs are taken in chunks whose partial sums wait in
 * part[] (exact int32 additions: the order does not matter). first: start from cb, else from
 * part; last: the chunk ends at ic (its 0..3 leftover channels go scalar), requantize and store,
 * else (kn a multiple of four) keep the sums in part. */
static inline __attribute__((always_inline)) void pw_pair_chunk(const tl_conv_params *p, const int32_t *shift,
                                                                 const tl_rq *rq, const int32_t *cb, int32_t ic,
                                                                 int32_t k0, int32_t kn, int32_t oc, int32_t nc,
                                                                 const int8_t *xa, const int8_t *filter,
                                                                 int8_t *oa, int32_t *xw, int32_t *part,
                                                                 uint32_t sg, int32_t lo, int32_t hi,
                                                                 const int first, const int last, const int all_fast)
{
    const int8_t *xb = xa + ic;
    int8_t *ob = oa + oc;
    const uint32_t lo4 = tl_bytes4(lo), hi4 = tl_bytes4(hi);
    const int32_t ng = kn >> 2, i4 = k0 + (ng << 2);
    /* (sg, lo, hi come in as values: read from *p here, they would be reloaded after every int8
     * store, which may alias it) */
    for (int32_t g = 0; g < ng; g++) {
        const uint32_t va = read_s8x4(xa + k0 + 4 * g), vb = read_s8x4(xb + k0 + 4 * g);
        xw[4 * g] = (int32_t)__sxtb16(va);
        xw[4 * g + 1] = tl_sxtb16_ror8(va);
        xw[4 * g + 2] = (int32_t)__sxtb16(vb);
        xw[4 * g + 3] = tl_sxtb16_ror8(vb);
    }
    int32_t c = 0;
    for (; c + 1 < nc; c += 2) {
        const int8_t *wa = filter + c * ic, *wb = wa + ic;
        int32_t a00, a01, a10, a11; /* (pixel, channel) */
        if (first) {
            a00 = a10 = cb[c];
            a01 = a11 = cb[c + 1];
        } else {
            a00 = part[2 * c];
            a01 = part[2 * c + 1];
            a10 = part[2 * c + 2];
            a11 = part[2 * c + 3];
        }
        if (ng > 0)
            pw_dot2x2(xw, xw + 4 * ng, wa + k0, wb + k0, &a00, &a01, &a10, &a11);
        if (!last) {
            part[2 * c] = a00;
            part[2 * c + 1] = a01;
            part[2 * c + 2] = a10;
            part[2 * c + 3] = a11;
            continue;
        }
        for (int32_t i = i4; i < ic; i++) {
            a00 += (int32_t)xa[i] * wa[i];
            a01 += (int32_t)xa[i] * wb[i];
            a10 += (int32_t)xb[i] * wa[i];
            a11 += (int32_t)xb[i] * wb[i];
        }
        pw_store2(oa + c, PW_RQ(c, a00), PW_RQ(c + 1, a01), lo4, hi4);
        pw_store2(ob + c, PW_RQ(c, a10), PW_RQ(c + 1, a11), lo4, hi4);
    }
    if (c < nc) { /* odd channel count: the whole row at once (scalar) in the last chunk */
        if (last) {
            const int8_t *w = filter + c * ic;
            int32_t a0 = cb[c], a1 = cb[c];
            for (int32_t i = 0; i < ic; i++) {
                a0 += (int32_t)xa[i] * w[i];
                a1 += (int32_t)xb[i] * w[i];
            }
            oa[c] = pw_clamp(PW_RQ(c, a0), lo, hi);
            ob[c] = pw_clamp(PW_RQ(c, a1), lo, hi);
        }
    }
}

static inline __attribute__((always_inline)) void pw_dsp_body(const tl_conv_params *p, const tl_quant *q,
                                                              int32_t pixels, int32_t ic, int32_t oc,
                                                              const int8_t *in, const int8_t *filter,
                                                              const tl_rq *rq, const int32_t *cb, int32_t c0,
                                                              int32_t nc, int8_t *out, const int all_fast)
{
    int32_t xw[TL_PW_WIDE]; /* per group of four channels: (x0,x2) (x1,x3) of pixel a, then of b */
    const int32_t *shift = q->shift + c0;
    const uint32_t sg = tl_rq_sign(p);
    const int32_t lo = p->act_min, hi = p->act_max;
    const int32_t i4 = ic & ~3;
    filter += c0 * ic;
    out += c0;
    int32_t px = 0;
    if (all_fast && ic <= TL_PW_WIDE && (ic & 3) == 0 && (nc & 1) == 0 && ic > 0) {
        pw_pairs_args a = {xw, rq, cb, NULL, oc, tl_bytes4(lo), tl_bytes4(hi), rq + nc, filter, NULL, xw + ic};
        for (; px + 1 < pixels; px += 2) {
            a.xa = in + px * ic;
            a.rq = rq;
            a.cb = cb;
            a.oa = out + px * oc;
            if (all_fast == PW_FAST_DOUBLE)
                tl_pw_pairs_dbl(&a);
            else
                tl_pw_pairs_single(&a);
        }
    } else if (ic <= TL_PW_WIDE) {
        for (; px + 1 < pixels; px += 2)
            pw_pair_chunk(p, shift, rq, cb, ic, 0, ic, oc, nc, in + px * ic, filter, out + px * oc, xw, NULL,
                          sg, lo, hi, 1, 1, all_fast);
    } else {
        int32_t part[2 * TL_PW_CBLK]; /* the block's partial sums, (channel pair, pixel, channel) */
        for (; px + 1 < pixels; px += 2)
            for (int32_t k0 = 0; k0 < ic; k0 += TL_PW_WIDE)
                pw_pair_chunk(p, shift, rq, cb, ic, k0, TL_MIN(TL_PW_WIDE, ic - k0), oc, nc, in + px * ic, filter,
                              out + px * oc, xw, part, sg, lo, hi, k0 == 0, k0 + TL_PW_WIDE >= ic, all_fast);
    }
    for (; px < pixels; px++) { /* the odd last pixel */
        const int8_t *x = in + px * ic;
        for (int32_t c = 0; c < nc; c++) {
            const int8_t *w = filter + c * ic;
            int32_t a = cb[c];
            for (int32_t i = 0; i < i4; i += 4) {
                const uint32_t xv = read_s8x4(x + i), wv = read_s8x4(w + i);
                a = __smlad((int32_t)__sxtb16(xv), (int32_t)__sxtb16(wv), a);
                a = __smlad(tl_sxtb16_ror8(xv), tl_sxtb16_ror8(wv), a);
            }
            for (int32_t i = i4; i < ic; i++)
                a += (int32_t)x[i] * w[i];
            out[px * oc + c] = pw_clamp(PW_RQ(c, a), lo, hi);
        }
    }
}
#undef PW_RQ

static void pw_dsp(const tl_conv_params *p, const tl_quant *q, int32_t pixels, int32_t ic, int32_t oc,
                   const int8_t *in, const int8_t *filter, const int32_t *bias, const int32_t *zpw,
                   int32_t c0, int32_t nc, int8_t *out)
{
    tl_rq rq[TL_PW_CBLK];
    int32_t cb[TL_PW_CBLK];
    int all_fast = 1;
    for (int32_t c = 0; c < nc; c++) {
        rq[c] = tl_rq_make(p, q->mult[c0 + c], q->shift[c0 + c]);
        cb[c] = (bias ? bias[c0 + c] : 0) - zpw[c];
        all_fast &= rq[c].rs >= 0 && rq[c].mult > 0;
    }
    if (all_fast && !p->single_rounding) /* one copy of the kernel per case */
        pw_dsp_body(p, q, pixels, ic, oc, in, filter, rq, cb, c0, nc, out, PW_FAST_DOUBLE);
    else if (all_fast)
        pw_dsp_body(p, q, pixels, ic, oc, in, filter, rq, cb, c0, nc, out, PW_FAST_SINGLE);
    else
        pw_dsp_body(p, q, pixels, ic, oc, in, filter, rq, cb, c0, nc, out, 0);
}
#else
/* Portable: four output channels per pass share each input load; the compiler vectorises the
 * four int8 dot products (the host build also gets an AVX2 clone). */
static TL_HOST_CLONES void pw_generic(const tl_conv_params *p, const tl_quant *q, int32_t pixels, int32_t ic,
                                      int32_t oc, const int8_t *in, const int8_t *filter, const int32_t *bias,
                                      const int32_t *zpw, int32_t c0, int32_t nc, int8_t *out)
{
    for (int32_t px = 0; px < pixels; px++) {
        const int8_t *x = in + px * ic;
        int32_t c = 0;
        for (; c + 3 < nc; c += 4) {
            const int8_t *w0 = filter + (c0 + c) * ic, *w1 = w0 + ic, *w2 = w1 + ic, *w3 = w2 + ic;
            int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
            for (int32_t i = 0; i < ic; i++) {
                const int32_t xv = x[i];
                a0 += xv * w0[i];
                a1 += xv * w1[i];
                a2 += xv * w2[i];
                a3 += xv * w3[i];
            }
            int8_t *o = out + px * oc + c0 + c;
            o[0] = (int8_t)finish(p, q, bias, c0 + c, a0, zpw[c]);
            o[1] = (int8_t)finish(p, q, bias, c0 + c + 1, a1, zpw[c + 1]);
            o[2] = (int8_t)finish(p, q, bias, c0 + c + 2, a2, zpw[c + 2]);
            o[3] = (int8_t)finish(p, q, bias, c0 + c + 3, a3, zpw[c + 3]);
        }
        for (; c < nc; c++) {
            const int8_t *w = filter + (c0 + c) * ic;
            int32_t a = 0;
            for (int32_t i = 0; i < ic; i++)
                a += (int32_t)x[i] * w[i];
            out[px * oc + c0 + c] = (int8_t)finish(p, q, bias, c0 + c, a, zpw[c]);
        }
    }
}
#endif

int32_t tl_pwconv_s8_scratch_bytes(void)
{
#if TL_HOST_WIDE
    return (int32_t)(sizeof(int32_t) * (TL_PW_X86_MAX_W / 2)) + 32;
#else
    return 0;
#endif
}

tl_status tl_pwconv_s8(const tl_conv_params *p, const tl_quant *q,
                       const tl_dims *in_dims, const int8_t *in,
                       const tl_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                       const tl_dims *out_dims, int8_t *out)
{
    return tl_pwconv_s8_ctx(NULL, p, q, in_dims, in, filter_dims, filter, bias, out_dims, out);
}

tl_status tl_pwconv_s8_ctx(const tl_ctx *scratch, const tl_conv_params *p, const tl_quant *q,
                           const tl_dims *in_dims, const int8_t *in,
                           const tl_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                           const tl_dims *out_dims, int8_t *out)
{
    (void)scratch; /* only the x86 path uses it */
    if (!p || !q || !in_dims || !in || !filter_dims || !filter || !out_dims || !out)
        return TL_ERR_ARG;
    const int32_t ic = in_dims->c, oc = out_dims->c;
    const int32_t pixels = in_dims->h * in_dims->w;
    if (filter_dims->h != 1 || filter_dims->w != 1 || filter_dims->c != ic || filter_dims->n != oc ||
        out_dims->h != in_dims->h || out_dims->w != in_dims->w)
        return TL_ERR_SHAPE;
    if (TL_REFERENCE_KERNELS) { /* the reference loop */
        for (int32_t px = 0; px < pixels; px++) {
            for (int32_t c = 0; c < oc; c++) {
                const int8_t *w = filter + c * ic, *x = in + px * ic;
                int32_t acc = 0, wsum = 0;
                for (int32_t i = 0; i < ic; i++) {
                    acc += (int32_t)w[i] * x[i];
                    wsum += w[i];
                }
                acc -= p->in_zp * wsum;
                if (bias)
                    acc += bias[c];
                acc = tl_add_zp(tl_requantize_p(p, acc, q->mult[c], q->shift[c]), p->out_zp);
                out[px * oc + c] = (int8_t)TL_CLAMP(acc, p->act_min, p->act_max);
            }
        }
        return TL_OK;
    }
#if TL_HOST_WIDE
    if (pw_x86(scratch, p, q, pixels, ic, oc, in, filter, bias, out))
        return TL_OK;
#endif
    int32_t zpw[TL_PW_CBLK]; /* in_zp * sum(w) of each channel in the block */
    for (int32_t c0 = 0; c0 < oc; c0 += TL_PW_CBLK) {
        const int32_t nc = TL_MIN(TL_PW_CBLK, oc - c0);
        for (int32_t c = 0; c < nc; c++) {
            const int8_t *w = filter + (c0 + c) * ic;
            int32_t wsum = 0;
            int32_t i = 0;
#if TL_HAVE_DSP
            /* four weights per USADA8: the bytes with the sign bit flipped are w + 128, unsigned */
            uint32_t u = 0;
            for (; i + 3 < ic; i += 4)
                u = __usada8(read_s8x4(w + i) ^ 0x80808080u, 0, u);
            wsum = (int32_t)u - 128 * i;
#endif
            for (; i < ic; i++)
                wsum += w[i];
            zpw[c] = p->in_zp * wsum;
        }
#if TL_HAVE_DSP
        pw_dsp(p, q, pixels, ic, oc, in, filter, bias, zpw, c0, nc, out);
#else
        pw_generic(p, q, pixels, ic, oc, in, filter, bias, zpw, c0, nc, out);
#endif
    }
    return TL_OK;
}
