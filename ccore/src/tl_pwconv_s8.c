/* 1x1 convolution, stride 1, no padding: a matrix product (pixels x in_c) . (in_c x out_c).
 * Same arithmetic as tl_conv_s8 with the spatial loops folded away. */
#include "tl_support.h"

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
    /* sum (x - zp) w = sum x w - zp sum w: the inner loop becomes a plain int8 dot product that
     * compilers vectorise; both sides are exact in int32 (|sum| <= 255 * 127 * in_c). */
    for (int32_t px = 0; px < pixels; px++) {
        const int8_t *x = in + px * ic;
        for (int32_t c = 0; c < oc; c++) {
            const int8_t *w = filter + c * ic;
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
