/* Depthwise convolution (depth multiplier 1), TFLite's reference
 * integer_ops::DepthwiseConvPerChannel arithmetic. Filter layout (1, KH, KW, C).
 *
 * Loop order of the fast path: per output pixel, the taps that fall inside the image are found
 * once (no per-tap bounds checks), and the channels run innermost over contiguous memory in
 * blocks of int32 accumulators. Each accumulator adds the same products as the reference (taps
 * outside the image skipped), so the result is identical. */
#include "tl_config.h"
#include "tl_x86.h"

#define TL_DW_CBLK 64 /* channels per block of stack accumulators */

#if TL_HAVE_DSP
#define TL_DW_DSP_CBLK 32 /* channels whose requantization constants are kept on the stack */

static inline uint32_t read_s8x4(const int8_t *p)
{
    uint32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}

/* Four channels' accumulators requantized, offset, saturated to int8, clamped as a word, stored. */
/* tl_rq_apply, without the test when every channel of the block takes the fast form */
/* all_fast: 0 (any channel), DW_FAST_DOUBLE or DW_FAST_SINGLE (every channel of the block has the
 * fast form and a positive multiplier; the rounding as a constant) */
#define DW_FAST_DOUBLE 1
#define DW_FAST_SINGLE 2
#define DW_RQ(k, acc)                                                                                       \
    (all_fast ? tl_rq_fast_pos(&rq[k], all_fast == DW_FAST_DOUBLE ? 0x80000000u : 0u, acc)                   \
              : tl_rq_apply(p, &rq[k], sg, shift[k], acc))

static inline void dw_store4(const tl_conv_params *p, const tl_rq *rq, const int32_t *shift, int32_t a0, int32_t a1,
                             int32_t a2, int32_t a3, uint32_t sg, uint32_t lo4, uint32_t hi4, int8_t *o,
                             const int all_fast)
{
    const int32_t v0 = DW_RQ(0, a0);
    const int32_t v1 = DW_RQ(1, a1);
    const int32_t v2 = DW_RQ(2, a2);
    const int32_t v3 = DW_RQ(3, a3);
    const uint32_t pk = ((uint32_t)__ssat(v0, 8) & 0xFFu) | (((uint32_t)__ssat(v1, 8) & 0xFFu) << 8) |
                        (((uint32_t)__ssat(v2, 8) & 0xFFu) << 16) | ((uint32_t)__ssat(v3, 8) << 24);
    const uint32_t r = tl_clamp_s8x4(pk, lo4, hi4);
    __builtin_memcpy(o, &r, 4);
}

/* A 3x3 window entirely inside the image, for one group of four channels, in assembly: taps are
 * taken two at a time, and PKHBT / PKHTB put the same channel of both taps side by side, so one
 * SMLAD per channel adds both products (13 instructions per two taps and four channels, against
 * 18 with the split of dw_tap4, which needs SMLABB / SMLATT per tap). Taps (0,0)+(0,1),
 * (0,2)+(1,0), (1,1)+(1,2), (2,0)+(2,1) pair up and (2,2) goes alone. The group's constants are
 * one record: bias - zp sum(w) (the zero point leaves the loop for such windows), then the four
 * pair words of each tap pair (channel k: w_k(ta) low, w_k(tb) high, as int16), then tap (2,2)
 * split by SXTB16. The run covers consecutive output pixels of one row; the same products are
 * added to the same int32 sum as the reference, then tl_rq_fast_pos, SSAT, the clamp. */
typedef struct {
    int32_t bi[4];   /* bias - zp sum(w) of the four channels */
    int32_t pairs[16]; /* tap pairs 0-3, four words each */
    int32_t t8[2];   /* tap (2,2): (w0, w2), (w1, w3) */
} dw_group3;

typedef struct {
    const dw_group3 *g;
    const tl_rq *rq;      /* the group's four channels */
    int8_t *out;          /* the first pixel's output at the group's channel */
    const int8_t *xend;   /* x after the last pixel */
    int32_t row;          /* iw ch: one input row */
    int32_t next;         /* stride_w ch - 2 row: from the window's last row to the next window */
    uint32_t lo4, hi4;
    int32_t ch;
    const int8_t *x;      /* the first window's top-left input at the group's channel */
} dw_run_args;         /* (ch before x: LDM fills r3 before r12) */

void tl_dw3x3_run_dbl(const dw_run_args *a);
void tl_dw3x3_run_single(const dw_run_args *a);

/* sums r4..r7 (channels 0..3), tap words r0 (a) r1 (b), x r12, ch r3, record lr */
__asm__(TL_ASM_MACROS
        ".macro TL_DW_PAIR\n"
        "  pkhtb  r2, r1, r0, asr #16\n"     /* channels 2, 3 of both taps */
        "  pkhbt  r0, r0, r1, lsl #16\n"     /* channels 0, 1 of both taps */
        "  ldmia  lr!, {r8, r9, r10, r11}\n"
        "  sxtb16 r1, r0\n"
        "  smlad  r4, r1, r8, r4\n"
        "  sxtb16 r1, r0, ror #8\n"
        "  smlad  r5, r1, r9, r5\n"
        "  sxtb16 r1, r2\n"
        "  smlad  r6, r1, r10, r6\n"
        "  sxtb16 r1, r2, ror #8\n"
        "  smlad  r7, r1, r11, r7\n"
        ".endm\n"
        /* frame: [0] g [4] rq [8] out [12] xend [16] row [20] next [24] lo4 [28] hi4 */
        ".macro TL_DW_RUN name, dbl\n"
        "  TL_ASM_ENTER \\name\n"
        "  ldmia  r0, {r3, r12}\n"            /* ch, x */
        "1:\n"                                  /* a pixel */
        "  ldr    lr, [sp, #0]\n"
        "  ldmia  lr!, {r4, r5, r6, r7}\n"
        "  ldr    r0, [r12]\n"                  /* (0,0) (0,1) */
        "  ldr    r1, [r12, r3]\n"
        "  TL_DW_PAIR\n"
        "  ldr    r0, [r12, r3, lsl #1]\n"      /* (0,2) (1,0) */
        "  ldr    r2, [sp, #16]\n"
        "  add    r12, r12, r2\n"
        "  ldr    r1, [r12]\n"
        "  TL_DW_PAIR\n"
        "  ldr    r0, [r12, r3]\n"              /* (1,1) (1,2) */
        "  ldr    r1, [r12, r3, lsl #1]\n"
        "  TL_DW_PAIR\n"
        "  ldr    r2, [sp, #16]\n"              /* (2,0) (2,1) */
        "  add    r12, r12, r2\n"
        "  ldr    r0, [r12]\n"
        "  ldr    r1, [r12, r3]\n"
        "  TL_DW_PAIR\n"
        "  ldr    r0, [r12, r3, lsl #1]\n"      /* (2,2) */
        "  ldrd   r8, r9, [lr]\n"
        "  sxtb16 r1, r0\n"
        "  sxtb16 r0, r0, ror #8\n"
        "  smlabb r4, r1, r8, r4\n"
        "  smlatt r6, r1, r8, r6\n"
        "  smlabb r5, r0, r9, r5\n"
        "  smlatt r7, r0, r9, r7\n"
        "  ldr    r2, [sp, #20]\n"
        "  add    r12, r12, r2\n"               /* the next window */
        "  ldr    lr, [sp, #4]\n"
        "  ldmia  lr!, {r0, r1, r2, r9}\n"
        "  TL_ASM_RQ r4, \\dbl, r9\n"
        "  ldmia  lr!, {r0, r1, r2, r9}\n"
        "  TL_ASM_RQ r5, \\dbl, r9\n"
        "  ldmia  lr!, {r0, r1, r2, r9}\n"
        "  TL_ASM_RQ r6, \\dbl, r9\n"
        "  ldmia  lr!, {r0, r1, r2, r9}\n"
        "  TL_ASM_RQ r7, \\dbl, r9\n"
        "  TL_ASM_PACK4 24\n"
        "  ldr    r2, [sp, #8]\n"
        "  str    r4, [r2]\n"
        "  add    r2, r2, r3\n"                 /* the next pixel's output, ch bytes on */
        "  str    r2, [sp, #8]\n"
        "  ldr    r0, [sp, #12]\n"
        "  cmp    r12, r0\n"
        "  bne    1b\n"
        "  TL_ASM_LEAVE \\name\n"
        ".endm\n"
        "TL_DW_RUN tl_dw3x3_run_dbl, 1\n"
        "TL_DW_RUN tl_dw3x3_run_single, 0\n"
        ".purgem TL_DW_PAIR\n"
        ".purgem TL_DW_RUN\n"
        TL_ASM_PURGE);

/* One block of channels [c0, c0 + nc) of every output pixel: the 3x3 windows inside the image in
 * runs along each row (tl_dw3x3_run_*), the others here. Four channels per pass: a word of
 * four int8 inputs is split by SXTB16 into (x0, x2) and (x1, x3), the zero point is taken off both
 * halves with SSUB16 (x - zp fits int16), and SMLABB / SMLATT multiply-accumulate each channel
 * with its weight, split the same way. Every accumulator adds the reference's products (taps
 * outside the image skipped) to the bias: the same int32 sum. */
static inline __attribute__((always_inline)) void dw_block_body(const tl_conv_params *p, const tl_quant *q,
                                                                int32_t ih, int32_t iw, int32_t ch, const int8_t *in,
                                                                int32_t kh, int32_t kw, const int8_t *filter,
                                                                const tl_rq *rq, const int32_t *b, int32_t oh,
                                                                int32_t ow, int8_t *out, int32_t c0, int32_t nc,
                                                                const int all_fast)
{
    const int32_t *shift = q->shift + c0;
    const int32_t zp = p->in_zp, lo = p->act_min, hi = p->act_max;
    const uint32_t sg = tl_rq_sign(p);
    const uint32_t zp2 = (uint16_t)zp * 0x00010001u;
    const uint32_t lo4 = tl_bytes4(lo), hi4 = tl_bytes4(hi);
    const int32_t n4 = nc & ~3;
    in += c0;
    filter += c0;
    /* 3x3 windows entirely inside the image go to the assembly run (tl_dw3x3_run_*) when every
     * channel of the block has the fast requantization form: a record per group of four */
    const int runs = kh == 3 && kw == 3 && all_fast && n4 > 0;
    dw_group3 grp[TL_DW_DSP_CBLK / 4];
    if (runs) {
        for (int32_t c = 0; c < n4; c += 4) {
            dw_group3 *g = &grp[c / 4];
            for (int32_t k = 0; k < 4; k++) {
                int32_t ws = 0;
                for (int32_t t = 0; t < 9; t++)
                    ws += filter[t * ch + c + k];
                g->bi[k] = b[c + k] - zp * ws;
            }
            for (int32_t i = 0; i < 4; i++)
                for (int32_t k = 0; k < 4; k++)
                    g->pairs[4 * i + k] = (int32_t)(((uint32_t)(uint16_t)filter[(2 * i) * ch + c + k]) |
                                                 ((uint32_t)(uint16_t)filter[(2 * i + 1) * ch + c + k] << 16));
            const uint32_t wv = read_s8x4(filter + 8 * ch + c);
            g->t8[0] = (int32_t)__sxtb16(wv);
            g->t8[1] = tl_sxtb16_ror8(wv);
        }
    }
    /* the output columns whose windows lie inside the image horizontally: [ox_lo, ox_hi) */
    const int32_t sw = p->stride_w;
    const int32_t ox_lo = (p->pad_left + sw - 1) / sw;
    const int32_t ox_hi = TL_MAX(ox_lo, TL_MIN(ow, iw - 3 + p->pad_left >= 0 ? (iw - 3 + p->pad_left) / sw + 1 : 0));
    for (int32_t oy = 0; oy < oh; oy++) {
        const int32_t y0 = oy * p->stride_h - p->pad_top;
        const int32_t fy0 = TL_MAX(0, -y0), fy1 = TL_MIN(kh, ih - y0);
        const int row_run = runs && fy0 == 0 && fy1 == 3 && ox_hi > ox_lo;
        if (row_run) {
            const int32_t x0 = ox_lo * sw - p->pad_left;
            dw_run_args a = {NULL, NULL, NULL, NULL, iw * ch, sw * ch - 2 * iw * ch, lo4, hi4, ch, NULL};
            for (int32_t c = 0; c < n4; c += 4) {
                a.g = &grp[c / 4];
                a.rq = rq + c;
                a.out = out + (oy * ow + ox_lo) * ch + c0 + c;
                a.x = in + (y0 * iw + x0) * ch + c;
                a.xend = a.x + (ox_hi - ox_lo) * sw * ch;
                if (all_fast == DW_FAST_DOUBLE)
                    tl_dw3x3_run_dbl(&a);
                else
                    tl_dw3x3_run_single(&a);
            }
        }
        for (int32_t ox = 0; ox < ow; ox++) {
            if (row_run && n4 == nc && ox == ox_lo) { /* the run took every channel of these */
                ox = ox_hi - 1;
                continue;
            }
            const int32_t x0 = ox * p->stride_w - p->pad_left;
            const int32_t fx0 = TL_MAX(0, -x0), fx1 = TL_MIN(kw, iw - x0);
            const int8_t *xp0 = in + ((y0 + fy0) * iw + x0 + fx0) * ch;
            const int8_t *wp0 = filter + (fy0 * kw + fx0) * ch;
            int8_t *o = out + (oy * ow + ox) * ch + c0;
            int32_t c = row_run && ox >= ox_lo && ox < ox_hi ? n4 : 0; /* the groups were the run's */
            for (; c < n4; c += 4) {
                int32_t a0 = b[c], a1 = b[c + 1], a2 = b[c + 2], a3 = b[c + 3];
                const int8_t *xr = xp0 + c, *wr = wp0 + c;
                for (int32_t fy = fy0; fy < fy1; fy++, xr += iw * ch, wr += kw * ch) {
                    const int8_t *x = xr, *w = wr;
                    for (int32_t fx = fx0; fx < fx1; fx++, x += ch, w += ch) {
                        const uint32_t xv = read_s8x4(x), wv = read_s8x4(w);
                        const int32_t xe = (int32_t)__ssub16(__sxtb16(xv), zp2);
                        const int32_t xo = (int32_t)__ssub16((uint32_t)tl_sxtb16_ror8(xv), zp2);
                        const int32_t we = (int32_t)__sxtb16(wv), wo = tl_sxtb16_ror8(wv);
                        a0 = __smlabb(xe, we, a0);
                        a2 = __smlatt(xe, we, a2);
                        a1 = __smlabb(xo, wo, a1);
                        a3 = __smlatt(xo, wo, a3);
                    }
                }
                dw_store4(p, rq + c, shift + c, a0, a1, a2, a3, sg, lo4, hi4, o + c, all_fast);
            }
            for (; c < nc; c++) { /* channels left over from the groups of four */
                int32_t a = b[c];
                for (int32_t fy = fy0; fy < fy1; fy++)
                    for (int32_t fx = fx0; fx < fx1; fx++)
                        a += (int32_t)wp0[((fy - fy0) * kw + fx - fx0) * ch + c] *
                             ((int32_t)xp0[((fy - fy0) * iw + fx - fx0) * ch + c] - zp);
                const int32_t v = DW_RQ(c, a);
                o[c] = (int8_t)TL_CLAMP(v, lo, hi);
            }
        }
    }
}
#undef DW_RQ

static void dw_block_dsp(const tl_conv_params *p, const tl_quant *q, int32_t ih, int32_t iw, int32_t ch,
                         const int8_t *in, int32_t kh, int32_t kw, const int8_t *filter, const int32_t *bias,
                         int32_t oh, int32_t ow, int8_t *out, int32_t c0, int32_t nc)
{
    tl_rq rq[TL_DW_DSP_CBLK];
    int32_t b[TL_DW_DSP_CBLK];
    int all_fast = 1;
    for (int32_t c = 0; c < nc; c++) {
        rq[c] = tl_rq_make(p, q->mult[c0 + c], q->shift[c0 + c]);
        b[c] = bias ? bias[c0 + c] : 0;
        all_fast &= rq[c].rs >= 0 && rq[c].mult > 0;
    }
    if (all_fast && !p->single_rounding) /* one copy of the kernel per case */
        dw_block_body(p, q, ih, iw, ch, in, kh, kw, filter, rq, b, oh, ow, out, c0, nc, DW_FAST_DOUBLE);
    else if (all_fast)
        dw_block_body(p, q, ih, iw, ch, in, kh, kw, filter, rq, b, oh, ow, out, c0, nc, DW_FAST_SINGLE);
    else
        dw_block_body(p, q, ih, iw, ch, in, kh, kw, filter, rq, b, oh, ow, out, c0, nc, 0);
}
#else
static TL_HOST_CLONES void dw_pixel(const tl_conv_params *p, const tl_quant *q, const int8_t *in, int32_t iw,
                                    int32_t ch, const int8_t *filter, int32_t kw, const int32_t *bias,
                                    int32_t y0, int32_t x0, int32_t fy0, int32_t fy1, int32_t fx0, int32_t fx1,
                                    int8_t *out)
{
    int32_t acc[TL_DW_CBLK];
    const int32_t zp = p->in_zp;
    for (int32_t c0 = 0; c0 < ch; c0 += TL_DW_CBLK) {
        const int32_t nc = TL_MIN(TL_DW_CBLK, ch - c0);
        for (int32_t c = 0; c < nc; c++)
            acc[c] = 0;
        for (int32_t fy = fy0; fy < fy1; fy++) {
            for (int32_t fx = fx0; fx < fx1; fx++) {
                const int8_t *x = in + ((y0 + fy) * iw + (x0 + fx)) * ch + c0;
                const int8_t *w = filter + (fy * kw + fx) * ch + c0;
                for (int32_t c = 0; c < nc; c++)
                    acc[c] += (int32_t)w[c] * ((int32_t)x[c] - zp);
            }
        }
        for (int32_t c = 0; c < nc; c++) {
            int32_t a = acc[c];
            if (bias)
                a += bias[c0 + c];
            a = tl_add_zp(tl_requantize_p(p, a, q->mult[c0 + c], q->shift[c0 + c]), p->out_zp);
            out[c0 + c] = (int8_t)TL_CLAMP(a, p->act_min, p->act_max);
        }
    }
}

#if TL_HOST_WIDE
/* Host AVX2: dw_pixel eight channels per vector (int32 lanes), requantized eight at a time; the
 * channels past the last multiple of 8 go through dw_pixel's own arithmetic, one by one. */
static TL_AVX2 void dw_pixel_x86(const tl_conv_params *p, const tl_quant *q, const int8_t *in, int32_t iw,
                                 int32_t ch, const int8_t *filter, int32_t kw, const int32_t *bias, int32_t y0,
                                 int32_t x0, int32_t fy0, int32_t fy1, int32_t fx0, int32_t fx1, int8_t *out)
{
    const __m256i zp = _mm256_set1_epi32(p->in_zp), ozp = _mm256_set1_epi32(p->out_zp);
    const __m256i amin = _mm256_set1_epi32(p->act_min), amax = _mm256_set1_epi32(p->act_max);
    int32_t c = 0;
    for (; c + 8 <= ch; c += 8) {
        __m256i acc = bias ? _mm256_loadu_si256((const __m256i *)(bias + c)) : _mm256_setzero_si256();
        for (int32_t fy = fy0; fy < fy1; fy++) {
            for (int32_t fx = fx0; fx < fx1; fx++) {
                const int8_t *x = in + ((y0 + fy) * iw + (x0 + fx)) * ch + c;
                const int8_t *w = filter + (fy * kw + fx) * ch + c;
                const __m256i xv = _mm256_sub_epi32(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)x)), zp);
                const __m256i wv = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)w));
                acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(wv, xv));
            }
        }
        __m256i left, right;
        tl_requant_params_x8(q->shift + c, &left, &right);
        __m256i v = tl_requantize_x8(acc, _mm256_loadu_si256((const __m256i *)(q->mult + c)), left, right);
        v = _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(v, ozp), amin), amax);
        tl_store_s8x8(out + c, v);
    }
    for (; c < ch; c++) {
        int32_t a = 0;
        for (int32_t fy = fy0; fy < fy1; fy++)
            for (int32_t fx = fx0; fx < fx1; fx++)
                a += (int32_t)filter[(fy * kw + fx) * ch + c] * ((int32_t)in[((y0 + fy) * iw + (x0 + fx)) * ch + c] - p->in_zp);
        if (bias)
            a += bias[c];
        a = tl_add_zp(tl_requantize_p(p, a, q->mult[c], q->shift[c]), p->out_zp);
        out[c] = (int8_t)TL_CLAMP(a, p->act_min, p->act_max);
    }
}

/* Host AVX2, 3x3 filters: eight channels [c, c + 8) over every output pixel, the block's nine
 * weight vectors, bias and requantization held in registers across the pixels (dw_pixel_x86 reloads
 * them at every pixel). Interior pixels start from bias - in_zp * sum(w) and add w x over the nine
 * taps; border pixels take only their taps, each (x - in_zp). Every sum is the reference's, in
 * int32 lanes that wrap alike whatever the order, so the bits are the same. */
static TL_AVX2 void dw_block3x3_x86(const tl_conv_params *p, const tl_quant *q, int32_t ih, int32_t iw,
                                    int32_t ch, const int8_t *in, const int8_t *filter, const int32_t *bias,
                                    int32_t oh, int32_t ow, int8_t *out, int32_t c)
{
    const __m256i zp = _mm256_set1_epi32(p->in_zp), ozp = _mm256_set1_epi32(p->out_zp);
    const __m256i amin = _mm256_set1_epi32(p->act_min), amax = _mm256_set1_epi32(p->act_max);
    __m256i w[9], wsum = _mm256_setzero_si256();
    for (int32_t t = 0; t < 9; t++) {
        w[t] = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(filter + t * ch + c)));
        wsum = _mm256_add_epi32(wsum, w[t]);
    }
    const __m256i b = bias ? _mm256_loadu_si256((const __m256i *)(bias + c)) : _mm256_setzero_si256();
    const __m256i interior0 = _mm256_sub_epi32(b, _mm256_mullo_epi32(zp, wsum));
    const __m256i mult = _mm256_loadu_si256((const __m256i *)(q->mult + c));
    __m256i left, right;
    tl_requant_params_x8(q->shift + c, &left, &right);
    const int32_t row = iw * ch;
    for (int32_t oy = 0; oy < oh; oy++) {
        const int32_t y0 = oy * p->stride_h - p->pad_top;
        const int32_t fy0 = TL_MAX(0, -y0), fy1 = TL_MIN(3, ih - y0);
        for (int32_t ox = 0; ox < ow; ox++) {
            const int32_t x0 = ox * p->stride_w - p->pad_left;
            const int32_t fx0 = TL_MAX(0, -x0), fx1 = TL_MIN(3, iw - x0);
            __m256i acc;
            if (fy0 == 0 && fy1 == 3 && fx0 == 0 && fx1 == 3) {
                const int8_t *x = in + (y0 * iw + x0) * ch + c;
                acc = interior0;
                for (int32_t fy = 0; fy < 3; fy++)
                    for (int32_t fx = 0; fx < 3; fx++) {
                        const __m256i xv = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(x + fy * row + fx * ch)));
                        acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(w[fy * 3 + fx], xv));
                    }
            } else {
                acc = b;
                for (int32_t fy = fy0; fy < fy1; fy++)
                    for (int32_t fx = fx0; fx < fx1; fx++) {
                        const int8_t *x = in + ((y0 + fy) * iw + x0 + fx) * ch + c;
                        const __m256i xv = _mm256_sub_epi32(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)x)), zp);
                        acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(w[fy * 3 + fx], xv));
                    }
            }
            __m256i v = tl_requantize_x8(acc, mult, left, right);
            v = _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(v, ozp), amin), amax);
            tl_store_s8x8(out + (oy * ow + ox) * ch + c, v);
        }
    }
}
#endif /* TL_HOST_WIDE */
#endif /* TL_HAVE_DSP */

/* The reference loop (TFLite order), kept as the TL_FORCE_GENERIC build. */
static void dw_reference(const tl_conv_params *p, const tl_quant *q, int32_t ih, int32_t iw, int32_t ch,
                         const int8_t *in, int32_t kh, int32_t kw, const int8_t *filter, const int32_t *bias,
                         int32_t oh, int32_t ow, int8_t *out)
{
    for (int32_t oy = 0; oy < oh; oy++) {
        for (int32_t ox = 0; ox < ow; ox++) {
            const int32_t y0 = oy * p->stride_h - p->pad_top;
            const int32_t x0 = ox * p->stride_w - p->pad_left;
            for (int32_t c = 0; c < ch; c++) {
                int32_t acc = 0;
                for (int32_t fy = 0; fy < kh; fy++) {
                    const int32_t y = y0 + fy;
                    if (y < 0 || y >= ih)
                        continue;
                    for (int32_t fx = 0; fx < kw; fx++) {
                        const int32_t x = x0 + fx;
                        if (x < 0 || x >= iw)
                            continue;
                        acc += (int32_t)filter[(fy * kw + fx) * ch + c] *
                               ((int32_t)in[(y * iw + x) * ch + c] - p->in_zp);
                    }
                }
                if (bias)
                    acc += bias[c];
                acc = tl_add_zp(tl_requantize_p(p, acc, q->mult[c], q->shift[c]), p->out_zp);
                out[(oy * ow + ox) * ch + c] = (int8_t)TL_CLAMP(acc, p->act_min, p->act_max);
            }
        }
    }
}

tl_status tl_dwconv_s8(const tl_conv_params *p, const tl_quant *q,
                       const tl_dims *in_dims, const int8_t *in,
                       const tl_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                       const tl_dims *out_dims, int8_t *out)
{
    if (!p || !q || !in_dims || !in || !filter_dims || !filter || !out_dims || !out)
        return TL_ERR_ARG;
    const int32_t ih = in_dims->h, iw = in_dims->w, ch = in_dims->c;
    const int32_t kh = filter_dims->h, kw = filter_dims->w;
    const int32_t oh = out_dims->h, ow = out_dims->w;
    if (filter_dims->c != ch || out_dims->c != ch || p->stride_h < 1 || p->stride_w < 1)
        return TL_ERR_SHAPE;
    if (TL_REFERENCE_KERNELS) {
        dw_reference(p, q, ih, iw, ch, in, kh, kw, filter, bias, oh, ow, out);
        return TL_OK;
    }
#if TL_HAVE_DSP
    for (int32_t c0 = 0; c0 < ch; c0 += TL_DW_DSP_CBLK)
        dw_block_dsp(p, q, ih, iw, ch, in, kh, kw, filter, bias, oh, ow, out, c0, TL_MIN(TL_DW_DSP_CBLK, ch - c0));
#else
#if TL_HOST_WIDE
    int x86 = tl_x86_avx2() && !p->single_rounding;
    for (int32_t c = 0; c < ch && x86; c++)
        x86 = q->mult[c] >= 0; /* tl_requantize_x8's domain */
    if (x86 && kh == 3 && kw == 3 && ch % 8 == 0) { /* MobileNet's depthwise layers */
        for (int32_t c = 0; c < ch; c += 8)
            dw_block3x3_x86(p, q, ih, iw, ch, in, filter, bias, oh, ow, out, c);
        return TL_OK;
    }
#endif
    for (int32_t oy = 0; oy < oh; oy++) {
        const int32_t y0 = oy * p->stride_h - p->pad_top;
        const int32_t fy0 = TL_MAX(0, -y0), fy1 = TL_MIN(kh, ih - y0);
        for (int32_t ox = 0; ox < ow; ox++) {
            const int32_t x0 = ox * p->stride_w - p->pad_left;
            const int32_t fx0 = TL_MAX(0, -x0), fx1 = TL_MIN(kw, iw - x0);
#if TL_HOST_WIDE
            if (x86) {
                dw_pixel_x86(p, q, in, iw, ch, filter, kw, bias, y0, x0, fy0, fy1, fx0, fx1, out + (oy * ow + ox) * ch);
                continue;
            }
#endif
            dw_pixel(p, q, in, iw, ch, filter, kw, bias, y0, x0, fy0, fy1, fx0, fx1, out + (oy * ow + ox) * ch);
        }
    }
#endif
    return TL_OK;
}
