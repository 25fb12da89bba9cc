/* Internal interface of LLS training: the model runtime (tl_model.c) calls the head, the head calls
 * the update through one dispatch point. Not part of the public API.
 *
 *   tl_lls.c         the LLS head of a layer: pooling, projection on the basis, local softmax, the
 *                    learning signal (and softmax cross-entropy for the last layer). Portable C.
 *   tl_lls_update.c  the weight and bias update from that signal: plain loops, the specification.
 *   tl_lls_dsp.c     the same integers on the Cortex-M DSP extension (SMLAD, SXTB16...).
 *   tl_lls_x86.c     the same integers on x86-64 with AVX2 / AVX-512 (hosts).
 *   tl_lls_path.c    the one place that picks, per job, which of the three computes it.
 * Every path computes exactly the integers of the portable one (tests/test_speed_paths.py,
 * bench/mcu_perf.py). */
#ifndef TL_LLS_H
#define TL_LLS_H

#include "tl_config.h"
#include "tl_layer.h"

typedef struct {
    int64_t *wacc;     /* (in_c) weight-gradient accumulators of one channel (1x1 layers) */
    int32_t *signal;   /* (T) pooled activations, then the learning signal */
    int16_t *delta;    /* (out_h * out_w) one output channel's delta map */
    int8_t *act;       /* the whole arena, act_size bytes (planned size) */
    int32_t act_size;
    void *fast;        /* host fast paths' working buffers (tl_lls_fast_bytes), or NULL: the
                        * portable path then runs, with the same result bits */
    int32_t fast_size;
} tl_arena;

/* ---------------------------------------------------------------- the head (tl_lls.c) */
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
/* Early exit (tl_early_exit.c): hidden layer i's local prediction and the largest probability of its
 * local softmax in Q16 (-1, -1 for a dead layer), computed as the training head computes them. */
tl_status tl_lls_head_confidence(const tl_model *m, int32_t i, const tl_arena *a, const int8_t *out,
                                 int32_t *pred, int32_t *conf_q16);
/* tl_model.c's arena plan, for tl_early_exit.c: the arena of a prepared model split into its parts,
 * and layer i's output place (its scratch pointers in *a set for that layer). */
tl_status tl_arena_split(const tl_model *m, const tl_ctx *arena, tl_arena *a);
int8_t *tl_arena_output(tl_arena *a, const tl_model *m, int32_t layer);
/* The start of a whole forward pass or training step (tl_model.c): input and res given, the arena
 * of a prepared model split into *a, res emptied (no prediction, no local heads). */
tl_status tl_pass_begin(const tl_model *m, const tl_ctx *arena, const int8_t *input, tl_result *res,
                        tl_arena *a);
/* The head's portable pieces that the dispatch point falls back to: P_t = sum of (h - zp) over
 * pooling cell t, channel-major t = c p^2 + y p + x; and sum_t P_t sign(basis) of one class of
 * the square basis (phase increment inc), in P's units. */
void tl_lls_pool_ref(const tl_layer *L, const int8_t *out, int32_t *P);
int64_t tl_lls_square_proj_ref(const int32_t *P, int32_t T, uint32_t inc);

/* ---------------------------------------------------------------- the update (tl_lls_update.c) */
/* Applies (or previews) the update of layer i given its learning signal a->signal: delta(pos, c) =
 * d_t(pos, c) * f'(h), t from the pooling grid (hidden) or t = c (classifier), exponent E. */
typedef void tl_lls_update_fn(tl_model *m, int32_t i, const tl_arena *a, const int8_t *in, const int8_t *out,
                              int32_t E, int classifier, int64_t *dw_preview, int64_t *db_preview);
tl_lls_update_fn tl_lls_update_ref;

/* Everything one output channel's weight update needs besides the gradient itself. */
typedef struct {
    int8_t *weights;        /* the layer's weights */
    int64_t *dw_preview;    /* preview mode: the unrounded update goes here, weights untouched */
    int32_t wm, ws, Ec;     /* combined scale (lr x per-channel factor) and block exponent */
    int32_t rounding;
    uint32_t prefix;        /* tl_upd_prefix of the layer */
} tl_upd_row;

#define TL_UPD_JB 64     /* input channels per gradient chunk (stack: 64 int32 + 64 int64) */
#define TL_UPD_FLUSH 256 /* products per int32 partial sum: 256 * 32767 * 128 < 2^31 */

/* acc * mult * 2^(shift - 31 - E) as an int64, rounded stochastically with the random word rnd
 * (or to nearest); with q16 != NULL also the unrounded value in Q16. */
int64_t tl_scale_update(int64_t acc, int32_t mult, int32_t shift, int32_t E, int32_t rounding, uint32_t rnd,
                        int64_t *q16);
/* One weight: tl_scale_update and the saturating subtraction (or the preview). */
void tl_upd_apply_one(const tl_upd_row *u, int64_t acc, int32_t idx);
/* n weights at idx0, idx0 + stride, ... with gradients acc[0..n). */
void tl_upd_apply_row(const tl_upd_row *u, const int64_t *acc, int32_t n, int32_t idx0, int32_t stride);
/* Channel c's bias update (or preview) from acc_b = sum of its deltas. */
void tl_upd_bias(const tl_model *m, tl_layer *L, int32_t c, int64_t acc_b, int32_t Ec, uint32_t rnd_key,
                 int64_t *db_preview);
/* Channel c's delta map (out_h x out_w int16) from its signals d (p*p cells; the classifier: one),
 * f' read off the stored outputs (out: the channel's first output, stride out_c). Returns the bias
 * gradient sum delta; *nonzero is nonzero iff some delta is. */
int64_t tl_upd_delta_map(const tl_layer *L, const int32_t *d, int32_t rs, const int8_t *out, int classifier,
                         int16_t *delta, int32_t *nonzero);
/* An FC layer's channel c: dW[c][k] = delta (x_k - zp), applied. */
void tl_upd_fc(const tl_layer *L, const tl_upd_row *u, int32_t c, int32_t delta, const int8_t *in);

/* The rounding stream of layer `layer` at step `step`: tl_rand4(seed, step, layer, idx) is
 * tl_mix32(prefix ^ idx), so the three leading mixes are computed once per layer, not per weight. */
static inline uint32_t tl_upd_prefix(uint32_t seed, uint32_t step, uint32_t layer)
{
    uint32_t h = tl_mix32(seed ^ 0x9E3779B9u);
    h = tl_mix32(h ^ step);
    return tl_mix32(h ^ (layer * 0x9E3779B9u));
}

/* The right shift that takes a channel's slice of the 30-bit signal to 15 bits. */
static inline int32_t tl_upd_channel_shift(const int32_t *d, int32_t n)
{
    uint32_t cmax = 0;
    for (int32_t t = 0; t < n; t++)
        cmax |= (uint32_t)(d[t] < 0 ? -d[t] : d[t]);
    return TL_MAX(0, tl_bit_length32(cmax) - 15);
}

/* A cell's learning signal in channel c's int16 delta scale: d rounded right by the channel's rs. */
static inline int32_t tl_upd_cell_signal(int32_t d, int32_t rs)
{
    return (int32_t)TL_CLAMP(tl_shr_round(d, rs), -32767, 32767);
}

/* The product of the layer's learning rate and a per-channel factor, both quantized multipliers. */
static inline void tl_upd_combine(int32_t m1, int32_t s1, int32_t m2, int32_t s2, int32_t *m, int32_t *s)
{
    *m = (int32_t)tl_shr_round((int64_t)m1 * m2, 31);
    *s = s1 + s2;
}

/* Everything but the gradient that channel c's weight update needs (inline: it is per channel on
 * every path). */
static inline tl_upd_row tl_upd_channel(const tl_model *m, const tl_layer *L, int32_t c, int32_t Ec, uint32_t prefix,
                                        int64_t *dw_preview)
{
    tl_upd_row u;
    u.weights = L->weights;
    u.dw_preview = dw_preview;
    u.Ec = Ec;
    u.rounding = m->cfg.rounding;
    u.prefix = prefix;
    tl_upd_combine(L->upd_mult[c], L->upd_shift[c], L->lr_mult, L->lr_shift, &u.wm, &u.ws);
    return u;
}

/* ---------------------------------------------------------------- the dispatch point (tl_lls_path.c) */
/* Bytes of the host fast paths' working buffers (tl_arena.fast); 0 where the build has none. */
int32_t tl_lls_fast_bytes(void);
void tl_lls_pool(const tl_layer *L, const int8_t *out, int32_t *P);
int64_t tl_lls_square_proj(const int32_t *P, int32_t T, uint32_t inc);
/* g_t of the square basis for every t into the arena's fast buffers (returned), or NULL: the head
 * then recomputes g_t per pass; likewise the buffer that keeps u_t, or NULL. */
int64_t *tl_lls_square_g(const tl_arena *a, const uint32_t *inc, const int32_t *w, int32_t C, int32_t T);
int64_t *tl_lls_u_buffer(const tl_arena *a, int32_t T);
tl_lls_update_fn tl_lls_update;

/* ---------------------------------------------------------------- Cortex-M DSP (tl_lls_dsp.c) */
#if TL_HAVE_DSP
tl_lls_update_fn tl_lls_update_dsp;
void tl_lls_pool_dsp(const tl_layer *L, const int8_t *out, int32_t *P);
#endif

/* ---------------------------------------------------------------- x86-64 hosts (tl_lls_x86.c) */
#if TL_HOST_WIDE
#define TL_WIDE_C 16        /* output channels per block */
#define TL_WIDE_N 256       /* im2col columns per conv gradient call */
#define TL_WIDE_MAX_P 4096  /* output positions the path takes (D is TL_WIDE_MAX_P x TL_WIDE_C int16) */
#define TL_WIDE_MAX_CELLS 64 /* pooling cells (grid edge <= 8) */
#define TL_WIDE_BALL 32768  /* int32 of B packed once per layer (tl_wide_pack_b) */
/* The working buffers of tl_lls_update_x86, carved from tl_arena.fast. */
#define TL_WIDE_FAST_BYTES                                                                                  \
    ((int32_t)(sizeof(int16_t) * TL_WIDE_MAX_P * TL_WIDE_C + sizeof(int16_t) * TL_WIDE_MAX_CELLS * TL_WIDE_C + \
               sizeof(int64_t) * TL_WIDE_C * TL_WIDE_N + sizeof(int32_t) * TL_WIDE_BALL))
int tl_wide_usable(const tl_layer *L);
void tl_wide_pool(const tl_layer *L, const int8_t *out, int32_t *P);
int64_t tl_wide_square_proj(const int32_t *P, int32_t T, uint32_t inc);
void tl_wide_square_g(const uint32_t *inc, const int32_t *w, int32_t C, int32_t T, int64_t *g);
/* layer update of a hidden conv / depthwise layer for which tl_wide_usable said yes; a->fast holds
 * TL_WIDE_FAST_BYTES */
tl_lls_update_fn tl_lls_update_x86;
#endif

#endif /* TL_LLS_H */
