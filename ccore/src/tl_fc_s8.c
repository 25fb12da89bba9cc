/* Fully connected, TFLite's reference integer_ops::FullyConnected (symmetric weights). */
#include "tl_support.h"

tl_status tl_fc_s8(const tl_conv_params *p, const tl_quant *q, int32_t per_channel,
                   int32_t in_n, const int8_t *in,
                   int32_t out_n, const int8_t *filter, const int32_t *bias, int8_t *out)
{
    if (!p || !q || !in || !filter || !out || in_n < 1 || out_n < 1)
        return TL_ERR_ARG;
    for (int32_t o = 0; o < out_n; o++) {
        const int8_t *w = filter + o * in_n;
        int32_t acc = 0;
        for (int32_t i = 0; i < in_n; i++)
            acc += (int32_t)w[i] * ((int32_t)in[i] - p->in_zp);
        if (bias)
            acc += bias[o];
        const int32_t k = per_channel ? o : 0;
        acc = tl_add_zp(tl_requantize_p(p, acc, q->mult[k], q->shift[k]), p->out_zp);
        out[o] = (int8_t)TL_CLAMP(acc, p->act_min, p->act_max);
    }
    return TL_OK;
}
