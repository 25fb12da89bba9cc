/* Layer geometry: the sizes and index ranges that the planner (tl_model.c), the training rule
 * (tl_lls*.c), the model file loader and the protocol all derive from a tl_layer. One definition
 * each, in tl_layer.c. Internal: not part of the public API. */
#ifndef TL_LAYER_H
#define TL_LAYER_H

#include "tl_support.h"

/* tl_layer_in_bytes and tl_layer_out_bytes are public (tinylls_api.h). */
/* Weights the layer holds: conv (out_c,k_h,k_w,in_c); dwconv (k_h,k_w,out_c); fc (out_c,in); avgpool 0.
 * int64, so the model file loader can bound it before anything relies on it fitting int32. */
int64_t tl_layer_n_weights(const tl_layer *L);
/* 1x1 convolution, stride 1, no padding: its positions are consecutive pixels of both maps. */
int tl_layer_is_pointwise(const tl_layer *L);
/* The output positions o in [*o0, *o1) of one axis (n_out outputs, n_in inputs) whose input
 * coordinate o * stride - pad + f lies in [0, n_in): where filter tap f touches the image.
 * Inline: the update calls it per channel and tap, where a call costs more than the body. */
static inline void tl_valid_range(int32_t n_out, int32_t n_in, int32_t stride, int32_t pad, int32_t f, int32_t *o0,
                                  int32_t *o1)
{
    const int32_t off = f - pad; /* input = o * stride + off */
    int32_t lo = off >= 0 ? 0 : (-off + stride - 1) / stride;
    int32_t hi = n_in - 1 - off < 0 ? 0 : (n_in - 1 - off) / stride + 1;
    *o0 = TL_MIN(lo, n_out);
    *o1 = TL_MAX(*o0, TL_MIN(hi, n_out));
}

#endif /* TL_LAYER_H */
