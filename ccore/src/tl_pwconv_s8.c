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
static inline int32_t read_s8x4(const int8_t *p)
{
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}

/* Two pixels x two output channels per pass, four input channels per step: SXTB16 splits a word
 * of int8 into two int16 pairs, SMLAD multiplies and adds both. 16 MACs per 8 SMLAD. */
static void pw_dsp(const tl_conv_params *p, const tl_quant *q, int32_t pixels, int32_t ic, int32_t oc,
                   const int8_t *in, const int8_t *filter, const int32_t *bias, const int32_t *zpw,
                   int32_t c0, int32_t nc, int8_t *out)
{
    int32_t px = 0;
    for (; px + 1 < pixels; px += 2) {
        const int8_t *xa = in + px * ic, *xb = xa + ic;
        int32_t c = 0;
        for (; c + 1 < nc; c += 2) {
            const int8_t *wa = filter + (c0 + c) * ic, *wb = wa + ic;
            int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0; /* (pixel, channel) */
            int32_t i = 0;
            for (; i + 3 < ic; i += 4) {
                const int32_t x0 = read_s8x4(xa + i), x1 = read_s8x4(xb + i);
                const int32_t w0 = read_s8x4(wa + i), w1 = read_s8x4(wb + i);
                const int32_t x0e = (int32_t)__sxtb16((uint32_t)x0), x0o = (int32_t)__sxtb16(tl_ror((uint32_t)x0, 8));
                const int32_t x1e = (int32_t)__sxtb16((uint32_t)x1), x1o = (int32_t)__sxtb16(tl_ror((uint32_t)x1, 8));
                const int32_t w0e = (int32_t)__sxtb16((uint32_t)w0), w0o = (int32_t)__sxtb16(tl_ror((uint32_t)w0, 8));
                const int32_t w1e = (int32_t)__sxtb16((uint32_t)w1), w1o = (int32_t)__sxtb16(tl_ror((uint32_t)w1, 8));
                a00 = __smlad(x0e, w0e, a00);
                a00 = __smlad(x0o, w0o, a00);
                a01 = __smlad(x0e, w1e, a01);
                a01 = __smlad(x0o, w1o, a01);
                a10 = __smlad(x1e, w0e, a10);
                a10 = __smlad(x1o, w0o, a10);
                a11 = __smlad(x1e, w1e, a11);
                a11 = __smlad(x1o, w1o, a11);
            }
            for (; i < ic; i++) {
                a00 += (int32_t)xa[i] * wa[i];
                a01 += (int32_t)xa[i] * wb[i];
                a10 += (int32_t)xb[i] * wa[i];
                a11 += (int32_t)xb[i] * wb[i];
            }
            out[px * oc + c0 + c] = (int8_t)finish(p, q, bias, c0 + c, a00, zpw[c]);
            out[px * oc + c0 + c + 1] = (int8_t)finish(p, q, bias, c0 + c + 1, a01, zpw[c + 1]);
            out[(px + 1) * oc + c0 + c] = (int8_t)finish(p, q, bias, c0 + c, a10, zpw[c]);
            out[(px + 1) * oc + c0 + c + 1] = (int8_t)finish(p, q, bias, c0 + c + 1, a11, zpw[c + 1]);
        }
        for (; c < nc; c++) {
            const int8_t *w = filter + (c0 + c) * ic;
            int32_t a0 = 0, a1 = 0;
            for (int32_t i = 0; i < ic; i++) {
                a0 += (int32_t)xa[i] * w[i];
                a1 += (int32_t)xb[i] * w[i];
            }
            out[px * oc + c0 + c] = (int8_t)finish(p, q, bias, c0 + c, a0, zpw[c]);
            out[(px + 1) * oc + c0 + c] = (int8_t)finish(p, q, bias, c0 + c, a1, zpw[c]);
        }
    }
    for (; px < pixels; px++) {
        const int8_t *x = in + px * ic;
        for (int32_t c = 0; c < nc; c++) {
            const int8_t *w = filter + (c0 + c) * ic;
            int32_t a = 0;
            int32_t i = 0;
            for (; i + 3 < ic; i += 4) {
                const int32_t xv = read_s8x4(x + i), wv = read_s8x4(w + i);
                a = __smlad((int32_t)__sxtb16((uint32_t)xv), (int32_t)__sxtb16((uint32_t)wv), a);
                a = __smlad((int32_t)__sxtb16(tl_ror((uint32_t)xv, 8)), (int32_t)__sxtb16(tl_ror((uint32_t)wv, 8)), a);
            }
            for (; i < ic; i++)
                a += (int32_t)x[i] * w[i];
            out[px * oc + c0 + c] = (int8_t)finish(p, q, bias, c0 + c, a, zpw[c]);
        }
    }
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
            for (int32_t i = 0; i < ic; i++)
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
