/* Layer geometry (see tl_layer.h). */
#include "tl_layer.h"

int32_t tl_layer_in_bytes(const tl_layer *L)
{
    return L->in_h * L->in_w * L->in_c;
}

int32_t tl_layer_out_bytes(const tl_layer *L)
{
    return L->out_h * L->out_w * L->out_c;
}

int64_t tl_layer_n_weights(const tl_layer *L)
{
    switch (L->kind) {
    case TL_LAYER_CONV: return (int64_t)L->out_c * L->k_h * L->k_w * L->in_c;
    case TL_LAYER_DWCONV: return (int64_t)L->k_h * L->k_w * L->out_c;
    case TL_LAYER_FC: return (int64_t)L->out_c * L->in_h * L->in_w * L->in_c;
    default: return 0;
    }
}

int tl_layer_is_pointwise(const tl_layer *L)
{
    return L->kind == TL_LAYER_CONV && L->k_h == 1 && L->k_w == 1 && L->stride_h == 1 &&
           L->stride_w == 1 && L->pad_top == 0 && L->pad_left == 0;
}
