/* Depthwise convolution (depth multiplier 1), TFLite's reference
 * integer_ops::DepthwiseConvPerChannel arithmetic. Filter layout (1, KH, KW, C). */
#include "tl_support.h"

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
                acc = tl_requantize_p(p, acc, q->mult[c], q->shift[c]) + p->out_zp;
                out[(oy * ow + ox) * ch + c] = (int8_t)TL_CLAMP(acc, p->act_min, p->act_max);
            }
        }
    }
    return TL_OK;
}
