/* Standard convolution, int8 in / int8 out, per-channel weights: TFLite's reference
 * integer_ops::ConvPerChannel loop order (out_y, out_x, out_c, filter_y, filter_x, in_c).
 * Padded taps are skipped, which equals padding with the input zero point. */
#include "tl_config.h"

/* bytes of stack for the patches of consecutive output pixels: on a board this frame sits on the
 * deepest stack chain (above tl_pwconv_s8's widened pixel pair), so it is kept small; MobileNet's
 * first layer (27 taps) still gets runs of 18 pixels, 3 calls per 48-pixel row. */
#if TL_HOST_WIDE
#define TL_CONV_PATCH 2048 /* the host's stacks are large: a whole 48-pixel row of 27-tap patches per call */
#else
#define TL_CONV_PATCH 512
#endif
#define TL_CONV_FPAD 256 /* bytes of stack for a filter padded to whole words (TL_HAVE_DSP) */

/* The row copy below where unaligned words are cheap (Cortex-M4 DSP builds, the host); the
 * portable firmware keeps the tap-by-tap loop. */
#define TL_CONV_ROW_COPY (TL_HAVE_DSP || TL_HOST_WIDE)

#if TL_CONV_ROW_COPY
/* n bytes, a word at a time (Cortex-M4 and x86 load and store unaligned words); no byte loop,
 * which gcc would turn into a memcpy call costing more than the copy. */
static inline void copy_small(int8_t *d, const int8_t *s, int32_t n)
{
    int32_t i = 0;
    for (; i + 3 < n; i += 4) {
        __builtin_memcpy(d + i, s + i, 4);
        __asm__("" : : : "memory"); /* keeps gcc from making the loop a memcpy call (~40 instructions
                                      * for MobileNet's 9-byte rows) */
    }
    if (n & 2) {
        __builtin_memcpy(d + i, s + i, 2);
        i += 2;
    }
    if (n & 1)
        d[i] = s[i];
}
#endif

/* Fast path: the patches (kh x kw x in_c, padded taps filled with the input zero point so they
 * contribute (zp - zp) w = 0) of a run of output pixels along a row are laid out side by side,
 * and tl_pwconv_s8 multiplies them with the filter seen as (out_c, kh*kw*in_c). Each output gets
 * sum (x - zp) w over the same taps as the reference, in int32 without overflow, then the same
 * bias, requantization and clamp. Returns 0 when the patch does not fit the buffer. */
static int conv_patches(const tl_ctx *scratch, const tl_conv_params *p, const tl_quant *q,
                        const tl_dims *in_dims, const int8_t *in, const tl_dims *filter_dims,
                        const int8_t *filter, const int32_t *bias, const tl_dims *out_dims, int8_t *out)
{
    int8_t patch[TL_CONV_PATCH];
    const int32_t ih = in_dims->h, iw = in_dims->w, ic = in_dims->c;
    const int32_t kh = filter_dims->h, kw = filter_dims->w;
    const int32_t oh = out_dims->h, ow = out_dims->w, oc = out_dims->c;
    const int32_t taps = kh * kw * ic;
    if (taps > TL_CONV_PATCH)
        return 0;
    int32_t K = taps; /* bytes per patch */
#if TL_HAVE_DSP
    /* Patches padded to a multiple of four bytes (zeros, against zero weights in a padded copy of
     * the filter), so tl_pwconv_s8 takes its assembly loop instead of a scalar tail per output:
     * MobileNet's first layer, 27 taps -> 28, 8 x 28 bytes of filter. Zero times zero adds nothing,
     * and the zero weights add nothing to zp sum(w): the same sums. */
    int8_t fpad[TL_CONV_FPAD];
    const int32_t K4 = (taps + 3) & ~3;
    if (K4 != taps && oc * K4 <= TL_CONV_FPAD && K4 <= TL_CONV_PATCH) {
        K = K4;
        for (int32_t c = 0; c < oc; c++)
            for (int32_t i = 0; i < K4; i++)
                fpad[c * K4 + i] = i < taps ? filter[c * taps + i] : 0;
        filter = fpad;
    }
#endif
    /* an even run: tl_pwconv_s8 takes pixels in pairs, an odd one goes through its slow path */
    const int32_t fit = TL_CONV_PATCH / K, run = fit > 1 ? fit & ~1 : fit;
    const int8_t zp = (int8_t)p->in_zp;
    const tl_dims f = {oc, 1, 1, K};
    for (int32_t oy = 0; oy < oh; oy++) {
        const int32_t y0 = oy * p->stride_h - p->pad_top;
        for (int32_t ox0 = 0; ox0 < ow; ox0 += run) {
            const int32_t n = TL_MIN(run, ow - ox0);
            for (int32_t k = 0; k < n; k++) {
                const int32_t x0 = (ox0 + k) * p->stride_w - p->pad_left;
                int8_t *dst = patch + k * K;
                for (int32_t i = taps; i < K; i++)
                    dst[i] = 0;
                for (int32_t fy = 0; fy < kh; fy++) {
                    const int32_t y = y0 + fy;
#if TL_CONV_ROW_COPY
                    if (y >= 0 && y < ih && x0 >= 0 && x0 + kw <= iw) {
                        /* a row of taps inside the image: kw * ic contiguous bytes on both sides */
                        copy_small(dst + fy * kw * ic, in + (y * iw + x0) * ic, kw * ic);
                        continue;
                    }
#endif
                    for (int32_t fx = 0; fx < kw; fx++) {
                        const int32_t x = x0 + fx;
                        int8_t *d = dst + (fy * kw + fx) * ic;
                        if (y < 0 || y >= ih || x < 0 || x >= iw) {
                            for (int32_t i = 0; i < ic; i++)
                                d[i] = zp;
                        } else {
                            const int8_t *src = in + (y * iw + x) * ic;
                            for (int32_t i = 0; i < ic; i++)
                                d[i] = src[i];
                        }
                    }
                }
            }
            const tl_dims pin = {1, 1, n, K}, pout = {1, 1, n, oc};
            /* the scratch lets the host's x86 pointwise path take the patches (without it the
             * portable loop would, at ~8x the instructions: the first layer's 27 taps) */
            tl_pwconv_s8_ctx(scratch, p, q, &pin, patch, &f, filter, bias, &pout, out + (oy * ow + ox0) * oc);
        }
    }
    return 1;
}

tl_status tl_conv_s8(const tl_conv_params *p, const tl_quant *q,
                     const tl_dims *in_dims, const int8_t *in,
                     const tl_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                     const tl_dims *out_dims, int8_t *out)
{
    return tl_conv_s8_ctx(NULL, p, q, in_dims, in, filter_dims, filter, bias, out_dims, out);
}

tl_status tl_conv_s8_ctx(const tl_ctx *scratch, const tl_conv_params *p, const tl_quant *q,
                         const tl_dims *in_dims, const int8_t *in,
                         const tl_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                         const tl_dims *out_dims, int8_t *out)
{
    if (!p || !q || !in_dims || !in || !filter_dims || !filter || !out_dims || !out)
        return TL_ERR_ARG;
    const int32_t ih = in_dims->h, iw = in_dims->w, ic = in_dims->c;
    const int32_t kh = filter_dims->h, kw = filter_dims->w;
    const int32_t oh = out_dims->h, ow = out_dims->w, oc = out_dims->c;
    if (filter_dims->c != ic || filter_dims->n != oc || p->stride_h < 1 || p->stride_w < 1)
        return TL_ERR_SHAPE;
    if (!TL_REFERENCE_KERNELS && conv_patches(scratch, p, q, in_dims, in, filter_dims, filter, bias, out_dims, out))
        return TL_OK;
    for (int32_t oy = 0; oy < oh; oy++) {
        for (int32_t ox = 0; ox < ow; ox++) {
            const int32_t y0 = oy * p->stride_h - p->pad_top;
            const int32_t x0 = ox * p->stride_w - p->pad_left;
            for (int32_t c = 0; c < oc; c++) {
                /* each product is within +-127*255 = 32385, so 2^16 taps fit in int32 */
                int32_t acc = 0;
                for (int32_t fy = 0; fy < kh; fy++) {
                    const int32_t y = y0 + fy;
                    if (y < 0 || y >= ih)
                        continue;
                    for (int32_t fx = 0; fx < kw; fx++) {
                        const int32_t x = x0 + fx;
                        if (x < 0 || x >= iw)
                            continue;
                        const int8_t *px = in + ((int32_t)y * iw + x) * ic;
                        const int8_t *pf = filter + ((c * kh + fy) * kw + fx) * ic;
                        for (int32_t i = 0; i < ic; i++)
                            acc += (int32_t)pf[i] * ((int32_t)px[i] - p->in_zp);
                    }
                }
                if (bias)
                    acc += bias[c];
                acc = tl_add_zp(tl_requantize_p(p, acc, q->mult[c], q->shift[c]), p->out_zp);
                out[(oy * ow + ox) * oc + c] = (int8_t)TL_CLAMP(acc, p->act_min, p->act_max);
            }
        }
    }
    return TL_OK;
}
