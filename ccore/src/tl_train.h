/* Internal interface between the model runtime (tl_model.c) and the training rule (tl_train.c). */
#ifndef TL_TRAIN_H
#define TL_TRAIN_H

#include "tl_config.h"

typedef struct {
    int64_t *wacc;     /* (in_c) weight-gradient accumulators of one channel (1x1 layers) */
    int32_t *signal;   /* (T) pooled activations, then the learning signal */
    int16_t *delta;    /* (out_h * out_w) one output channel's delta map */
    int8_t *act;       /* the whole arena, act_size bytes (planned size) */
    int32_t act_size;
} tl_arena;

int32_t tl_layer_in_bytes(const tl_layer *L);
int32_t tl_layer_out_bytes(const tl_layer *L);
int32_t tl_layer_n_weights(const tl_layer *L);
int tl_layer_is_pointwise(const tl_layer *L);
tl_status tl_arena_split(const tl_model *m, const tl_ctx *arena, tl_arena *a);
/* Layer `layer`'s output tensor in the arena; also points a's scratch at this layer's share. */
int8_t *tl_arena_output(tl_arena *a, const tl_model *m, int32_t layer);

/* Local LLS head of hidden layer i on its output `out`: prediction and loss (label >= 0), and
 * with update != 0 the layer's weight update from its input `in`. With dw/db preview pointers
 * the update, before rounding, is written there (Q16 LSB) and the model is left untouched. */
tl_status tl_train_hidden(tl_model *m, int32_t i, const tl_arena *a, const int8_t *in,
                          const int8_t *out, int32_t label, int32_t update,
                          int32_t *pred, int32_t *loss_q16, int64_t *dw_preview, int64_t *db_preview);
/* The same for the last layer, trained with softmax cross-entropy on its own logits. */
tl_status tl_train_classifier(tl_model *m, int32_t i, const tl_arena *a, const int8_t *in,
                              const int8_t *out, int32_t label, int32_t update,
                              int32_t *pred, int32_t *loss_q16, int64_t *dw_preview, int64_t *db_preview);

#if TL_HOST_WIDE
/* tl_train_wide.c: the host's many-channel gradient path (see there). */
#define TL_WIDE_C 16        /* output channels per block */
#define TL_WIDE_N 256       /* im2col columns per conv gradient call */
#define TL_WIDE_MAX_P 4096  /* output positions the path takes (D is TL_WIDE_MAX_P x TL_WIDE_C int16) */
#define TL_WIDE_MAX_CELLS 64 /* pooling cells (grid edge <= 8) */
int tl_wide_usable(const tl_layer *L);
void tl_wide_deltas(const tl_layer *L, const int8_t *out, int32_t c0, int32_t nc, const int16_t *v0, int16_t *D,
                    int64_t *bsum, int32_t *any);
#define TL_WIDE_BALL 32768  /* int32 of B packed once per layer (tl_wide_pack_b) */
void tl_wide_pack_b(const tl_layer *L, const int8_t *in, int32_t n0, int32_t nn, int32_t *Ball);
void tl_wide_conv_grad(const tl_layer *L, const int8_t *in, const int16_t *D, const int32_t *Ball, int32_t n0,
                       int32_t nn, int64_t *G);
void tl_wide_dw_grad(const tl_layer *L, const int8_t *in, const int16_t *D, int32_t c0, int32_t nc, int64_t *G);
void tl_wide_pool(const tl_layer *L, const int8_t *out, int32_t *P);
int64_t tl_wide_square_proj(const int32_t *P, int32_t T, uint32_t inc);
void tl_wide_square_g(const uint32_t *inc, const int32_t *w, int32_t C, int32_t T, int64_t *g);
int32_t tl_wide_apply(int8_t *weights, const int64_t *acc, int32_t n, int32_t idx0, int32_t mult, int32_t r,
                      int nearest, uint32_t prefix);
#endif

#endif /* TL_TRAIN_H */
