/* Standard convolution, int8 in / int8 out, per-channel weights: TFLite's reference
 * integer_ops::ConvPerChannel loop order (out_y, out_x, out_c, filter_y, filter_x, in_c).
 * Padded taps are skipped, which equals padding with the input zero point. */
#include "tl_support.h"

tl_status tl_conv_s8(const tl_conv_params *p, const tl_quant *q,
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
                acc = tl_requantize_p(p, acc, q->mult[c], q->shift[c]) + p->out_zp;
                out[(oy * ow + ox) * oc + c] = (int8_t)TL_CLAMP(acc, p->act_min, p->act_max);
            }
        }
    }
    return TL_OK;
}
