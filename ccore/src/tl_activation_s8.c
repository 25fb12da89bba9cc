/* Standalone activations (for imported graphs where they are separate operators). */
#include "tl_support.h"

tl_status tl_clamp_s8(int32_t n, int8_t *x, int32_t act_min, int32_t act_max)
{
    if (!x || n < 0 || act_min > act_max || act_min < -128 || act_max > 127)
        return TL_ERR_ARG;
    for (int32_t i = 0; i < n; i++)
        x[i] = (int8_t)TL_CLAMP((int32_t)x[i], act_min, act_max);
    return TL_OK;
}

/* TFLite's reference QuantizeLeakyRelu: the non-negative and the negative side each have their
 * own multiplier (identity and alpha, both already divided by the output scale). */
tl_status tl_leaky_relu_s8(int32_t n, const int8_t *in, int32_t in_zp, int32_t out_zp,
                           int32_t id_mult, int32_t id_shift,
                           int32_t alpha_mult, int32_t alpha_shift, int8_t *out)
{
    if (!in || !out || n < 0)
        return TL_ERR_ARG;
    for (int32_t i = 0; i < n; i++) {
        const int32_t v = (int32_t)in[i] - in_zp;
        int32_t r = v >= 0 ? tl_requantize(v, id_mult, id_shift) : tl_requantize(v, alpha_mult, alpha_shift);
        r += out_zp;
        out[i] = (int8_t)TL_CLAMP(r, -128, 127);
    }
    return TL_OK;
}
