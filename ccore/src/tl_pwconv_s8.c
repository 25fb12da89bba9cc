/* 1x1 convolution, stride 1, no padding: a matrix product (pixels x in_c) . (in_c x out_c).
 * Same arithmetic as tl_conv_s8 with the spatial loops folded away. */
#include "tl_config.h"

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
    acc = tl_requantize_p(p, acc, q->mult[c], q->shift[c]) + p->out_zp;
    return TL_CLAMP(acc, p->act_min, p->act_max);
}

#if TL_HAVE_DSP
#define TL_PW_WIDE 256 /* input channels a pixel pair is widened for (1 KB of stack) */

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
#define PW_RQ(c, acc) (all_fast ? tl_rq_fast(&rq[c], sg, acc) : tl_rq_apply(p, &rq[c], sg, shift[c], acc))

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
    const uint32_t lo4 = tl_bytes4(lo), hi4 = tl_bytes4(hi);
    const int32_t ng = ic >> 2, i4 = ng << 2;
    filter += c0 * ic;
    out += c0;
    int32_t px = 0;
    for (; ic <= TL_PW_WIDE && px + 1 < pixels; px += 2) {
        const int8_t *xa = in + px * ic, *xb = xa + ic;
        int8_t *oa = out + px * oc, *ob = oa + oc;
        for (int32_t g = 0; g < ng; g++) {
            const uint32_t va = read_s8x4(xa + 4 * g), vb = read_s8x4(xb + 4 * g);
            xw[4 * g] = (int32_t)__sxtb16(va);
            xw[4 * g + 1] = tl_sxtb16_ror8(va);
            xw[4 * g + 2] = (int32_t)__sxtb16(vb);
            xw[4 * g + 3] = tl_sxtb16_ror8(vb);
        }
        int32_t c = 0;
        for (; c + 1 < nc; c += 2) {
            const int8_t *wa = filter + c * ic, *wb = wa + ic;
            int32_t a00 = cb[c], a01 = cb[c + 1], a10 = cb[c], a11 = cb[c + 1]; /* (pixel, channel) */
            const int32_t *x = xw;
            for (int32_t g = 0; g < ng; g++, x += 4) {
                uint32_t w = read_s8x4(wa + 4 * g);
                int32_t we = (int32_t)__sxtb16(w), wo = tl_sxtb16_ror8(w);
                a00 = __smlad(x[0], we, a00);
                a00 = __smlad(x[1], wo, a00);
                a10 = __smlad(x[2], we, a10);
                a10 = __smlad(x[3], wo, a10);
                w = read_s8x4(wb + 4 * g);
                we = (int32_t)__sxtb16(w);
                wo = tl_sxtb16_ror8(w);
                a01 = __smlad(x[0], we, a01);
                a01 = __smlad(x[1], wo, a01);
                a11 = __smlad(x[2], we, a11);
                a11 = __smlad(x[3], wo, a11);
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
        if (c < nc) { /* odd channel count */
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
    for (; px < pixels; px++) { /* the odd last pixel, or every pixel when ic > TL_PW_WIDE */
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
        all_fast &= rq[c].rs >= 0;
    }
    if (all_fast) /* one copy of the kernel per case */
        pw_dsp_body(p, q, pixels, ic, oc, in, filter, rq, cb, c0, nc, out, 1);
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

tl_status tl_pwconv_s8(const tl_conv_params *p, const tl_quant *q,
                       const tl_dims *in_dims, const int8_t *in,
                       const tl_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                       const tl_dims *out_dims, int8_t *out)
{
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
                acc = tl_requantize_p(p, acc, q->mult[c], q->shift[c]) + p->out_zp;
                out[px * oc + c] = (int8_t)TL_CLAMP(acc, p->act_min, p->act_max);
            }
        }
        return TL_OK;
    }
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
