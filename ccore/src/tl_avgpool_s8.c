/* Average pooling, TFLite's reference integer_ops::AveragePool: taps outside the image are not
 * counted, the sum is divided with rounding half away from zero. Input and output share scale
 * and zero point, so no requantization. */
#include "tl_support.h"

tl_status tl_avgpool_s8(const tl_conv_params *p, int32_t k_h, int32_t k_w,
                        const tl_dims *in_dims, const int8_t *in,
                        const tl_dims *out_dims, int8_t *out)
{
    if (!p || !in_dims || !in || !out_dims || !out || k_h < 1 || k_w < 1)
        return TL_ERR_ARG;
    const int32_t ih = in_dims->h, iw = in_dims->w, ch = in_dims->c;
    if (out_dims->c != ch)
        return TL_ERR_SHAPE;
    for (int32_t oy = 0; oy < out_dims->h; oy++) {
        for (int32_t ox = 0; ox < out_dims->w; ox++) {
            const int32_t y0 = oy * p->stride_h - p->pad_top;
            const int32_t x0 = ox * p->stride_w - p->pad_left;
            const int32_t fy0 = TL_MAX(0, -y0), fy1 = TL_MIN(k_h, ih - y0);
            const int32_t fx0 = TL_MAX(0, -x0), fx1 = TL_MIN(k_w, iw - x0);
            const int32_t count = (fy1 - fy0) * (fx1 - fx0);
            if (fy1 <= fy0 || fx1 <= fx0)
                return TL_ERR_SHAPE; /* a window entirely in the padding */
            for (int32_t c = 0; c < ch; c++) {
                int32_t acc = 0;
                for (int32_t fy = fy0; fy < fy1; fy++)
                    for (int32_t fx = fx0; fx < fx1; fx++)
                        acc += in[((y0 + fy) * iw + (x0 + fx)) * ch + c];
                acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                out[(oy * out_dims->w + ox) * ch + c] = (int8_t)TL_CLAMP(acc, p->act_min, p->act_max);
            }
        }
    }
    return TL_OK;
}
