/* The model: validation, the arena planner, and the layer-by-layer forward pass that inference
 * and training share.
 *
 * Arena layout (the caller's one buffer, 8-byte aligned), while layer i runs:
 *   even i: [ out_i | wacc | signal | delta | ...free... | in_i = out_{i-1} ]
 *   odd i:  [ in_i = out_{i-1} | wacc | signal | delta | ...free... | out_i ]
 * wacc holds one output channel's weight gradients while a 1x1 layer trains; signal and delta
 * hold the layer's LLS learning signal (see tl_lls.c). On hosts the caller may append
 * tl_model_fast_scratch_bytes() to the arena: the x86 training path keeps its buffers there.
 * Activations are double-ended: even layers write their output at the start of the activation
 * region, odd layers at its end, so a layer's input (the previous output) and its output never
 * overlap as long as in + out <= region. The region is therefore max over layers of in + out:
 * the largest single layer, not the sum.
 * Layer 0 is planned like the others: its input has a place at the end of the region
 * (tl_model_input_offset), which its output and scratch never reach, so a board can stage the
 * input inside the arena instead of in a buffer of its own. A caller may also pass an input that
 * lies outside the arena (the host does). Layer 1 writes its output over that place: the staged
 * input is gone after a step. */
#include "tl_lls.h"

/* ---------------------------------------------------------------- validation */
static int quant_ok(const int32_t *mult, const int32_t *shift, int32_t n)
{
    for (int32_t i = 0; i < n; i++)
        if (!tl_qmult_ok(mult[i], shift[i]))
            return 0;
    return 1;
}


static int zp_ok(int32_t zp)
{
    return zp >= -128 && zp <= 127;
}

/* One spatial axis: every window must start inside the padded image and touch the real one. */
static int axis_ok(int32_t in, int32_t out, int32_t k, int32_t stride, int32_t pad)
{
    if (in < 1 || out < 1 || k < 1 || stride < 1 || pad < 0 || pad >= k)
        return 0;
    if (in > 4096 || out > 4096 || k > 64 || stride > 64)
        return 0;
    const int32_t last = (out - 1) * stride - pad; /* start of the last window */
    return last <= in - 1 && last + k <= in + k - 1;
}

/* The LLS pooling grid: the largest p in {8, 4, 2} that divides both output sides and keeps
 * out_c * p * p <= TL_LLS_MAX_T (the authors' choices), else the whole map when it is square and
 * small (MobileNet's last 3x3 maps), else 1. Even division keeps every cell the same size, so the
 * pooled sums are proportional to the averages and the normalisation removes both activation
 * scale and cell size. Without the whole-map case the 3x3 layers would pool to 1x1, a global
 * average that discards position and leaves their local heads near chance. */
static int32_t choose_pool(const tl_layer *L)
{
    for (int32_t p = 8; p >= 2; p /= 2)
        if (L->out_h % p == 0 && L->out_w % p == 0 && L->out_c * p * p <= TL_LLS_MAX_T)
            return p;
    if (L->out_h == L->out_w && L->out_h <= 8 && L->out_c * L->out_h * L->out_w <= TL_LLS_MAX_T)
        return L->out_h;
    return 1;
}

static tl_status check_layer(const tl_model *m, int32_t i, const tl_layer *L)
{
    const int last = i == m->n_layers - 1;
    if (L->kind < TL_LAYER_CONV || L->kind > TL_LAYER_AVGPOOL)
        return TL_ERR_UNSUPPORTED;
    if (L->act < TL_ACT_NONE || L->act > TL_ACT_LEAKY)
        return TL_ERR_UNSUPPORTED;
    if (L->in_h < 1 || L->in_w < 1 || L->in_c < 1 || L->out_h < 1 || L->out_w < 1 || L->out_c < 1)
        return TL_ERR_SHAPE;
    if (L->in_c > 4096 || L->out_c > 4096)
        return TL_ERR_SHAPE;
    if (i > 0) {
        const tl_layer *P = &m->layers[i - 1];
        if (P->out_h != L->in_h || P->out_w != L->in_w || P->out_c != L->in_c)
            return TL_ERR_SHAPE;
    }
    if (!zp_ok(L->in_zp) || !zp_ok(L->out_zp))
        return TL_ERR_QUANT;
    if (L->act_min < -128 || L->act_max > 127 || L->act_min > L->act_max)
        return TL_ERR_QUANT;
    switch (L->kind) {
    case TL_LAYER_CONV:
    case TL_LAYER_AVGPOOL:
    case TL_LAYER_DWCONV:
        if (!axis_ok(L->in_h, L->out_h, L->k_h, L->stride_h, L->pad_top) ||
            !axis_ok(L->in_w, L->out_w, L->k_w, L->stride_w, L->pad_left))
            return TL_ERR_SHAPE;
        if (L->kind != TL_LAYER_CONV && L->in_c != L->out_c)
            return TL_ERR_SHAPE;
        break;
    case TL_LAYER_FC:
        if (L->out_h != 1 || L->out_w != 1)
            return TL_ERR_SHAPE;
        break;
    }
    if (L->kind == TL_LAYER_AVGPOOL) {
        if (L->trainable)
            return TL_ERR_UNSUPPORTED;
        return TL_OK;
    }
    if (!L->weights || !L->bias || !L->out_mult || !L->out_shift)
        return TL_ERR_MODEL;
    if (!quant_ok(L->out_mult, L->out_shift, L->out_c))
        return TL_ERR_QUANT;
    if (L->act == TL_ACT_LEAKY && !tl_qmult_ok(L->leaky_mult, L->leaky_shift))
        return TL_ERR_QUANT;
    if (L->trainable) {
        if (!L->upd_mult || !L->upd_shift || !L->bupd_mult || !L->bupd_shift)
            return TL_ERR_MODEL;
        if (!quant_ok(L->upd_mult, L->upd_shift, L->out_c) ||
            !quant_ok(L->bupd_mult, L->bupd_shift, L->out_c) ||
            !tl_qmult_ok(L->lr_mult, L->lr_shift))
            return TL_ERR_QUANT;
        if (last) {
            if (L->out_h * L->out_w != 1 || !tl_qmult_ok(L->logit_mult, L->logit_shift))
                return TL_ERR_UNSUPPORTED;
        } else if (L->lls_m && !tl_qmult_ok(L->lls_m_lr_mult, L->lls_m_lr_shift)) {
            return TL_ERR_QUANT;
        }
    }
    return TL_OK;
}

static int32_t plan_arena(const tl_model *m);

tl_status tl_model_prepare(tl_model *m)
{
    if (!m || !m->layers)
        return TL_ERR_ARG;
    m->arena_bytes = 0; /* not prepared until every check below passed */
    if (m->n_layers < 1 || m->n_layers > TL_MAX_LAYERS)
        return TL_ERR_MODEL;
    if (m->classes < 1 || m->classes > TL_MAX_CLASSES)
        return TL_ERR_MODEL;
    const tl_train_cfg *cfg = &m->cfg;
    if (cfg->basis < TL_BASIS_SQUARE || cfg->basis > TL_BASIS_RANDOM ||
        cfg->variant < TL_LLS_PLAIN || cfg->variant > TL_LLS_MXM ||
        cfg->rounding < TL_ROUND_STOCHASTIC || cfg->rounding > TL_ROUND_NEAREST ||
        cfg->inv_tau_q8 < 1 || cfg->inv_tau_q8 > (1 << 16))
        return TL_ERR_ARG;
    for (int32_t i = 0; i < m->n_layers; i++) {
        tl_status s = check_layer(m, i, &m->layers[i]);
        if (s != TL_OK)
            return s;
    }
    const tl_layer *last = &m->layers[m->n_layers - 1];
    if (tl_layer_out_bytes(last) != m->classes)
        return TL_ERR_SHAPE;
    for (int32_t i = 0; i < m->n_layers; i++) {
        tl_layer *L = &m->layers[i];
        L->pool = L->kind == TL_LAYER_AVGPOOL ? 0 : choose_pool(L);
        if (i < m->n_layers - 1 && L->trainable) {
            if (L->pool == 0)
                return TL_ERR_UNSUPPORTED; /* no even pooling grid: LLS cannot train this layer */
            if (cfg->variant != TL_LLS_PLAIN && !L->lls_m)
                return TL_ERR_MODEL;
        }
    }
    m->arena_bytes = plan_arena(m);
    return TL_OK;
}

/* ---------------------------------------------------------------- planning */
/* The training scratch layer i needs while it is the current layer (bytes, 8-aligned parts):
 * int64 wacc[in_c] (1x1 layers), int32 signal[T], int16 delta[out_h * out_w]. */
static int32_t scratch_bytes(const tl_model *m, int32_t i, int32_t *wacc, int32_t *signal, int32_t *delta)
{
    const tl_layer *L = &m->layers[i];
    *wacc = *signal = *delta = 0;
    if (L->kind == TL_LAYER_AVGPOOL)
        return 0;
    if (L->trainable && tl_layer_is_pointwise(L))
        *wacc = L->in_c * 8;
    const int32_t t = i == m->n_layers - 1 ? m->classes : L->out_c * L->pool * L->pool;
    *signal = (t * 4 + 7) & ~7;
    *delta = (L->out_h * L->out_w * 2 + 7) & ~7;
    return *wacc + *signal + *delta;
}

/* Bytes of the activation region layer i occupies: its input (the previous layer's output; for
 * layer 0 the model input, staged or not) and its output, each rounded up to 8 so scratch between
 * them stays aligned. */
static int32_t io_bytes(const tl_model *m, int32_t i)
{
    const int32_t in = tl_layer_in_bytes(&m->layers[i]);
    return ((in + 7) & ~7) + ((tl_layer_out_bytes(&m->layers[i]) + 7) & ~7);
}

/* The arena plan of a validated model (tl_model_prepare stores it in m->arena_bytes). */
static int32_t plan_arena(const tl_model *m)
{
    int32_t need = 8;
    for (int32_t i = 0; i < m->n_layers; i++) {
        int32_t w, g, d;
        need = TL_MAX(need, io_bytes(m, i) + scratch_bytes(m, i, &w, &g, &d));
    }
    return need;
}

int32_t tl_model_arena_bytes(const tl_model *m)
{
    if (!m || m->arena_bytes <= 0)
        return TL_ERR_ARG; /* not prepared */
    return m->arena_bytes;
}

/* The host fast paths' buffers, shared in time: a layer's forward pass (the 1x1 kernel's packed
 * weights) is done before its training starts. */
#define TL_FAST_ALIGN 64

static int32_t fast_bytes(void)
{
    const int32_t raw = TL_MAX(tl_lls_fast_bytes(), tl_pwconv_s8_scratch_bytes());
    /* the buffers are read with aligned vector loads: room to align their start */
    return raw > 0 ? raw + TL_FAST_ALIGN : 0;
}

int32_t tl_model_fast_scratch_bytes(const tl_model *m)
{
    if (!m || m->arena_bytes <= 0)
        return TL_ERR_ARG;
    return fast_bytes();
}

int32_t tl_model_input_offset(const tl_model *m)
{
    const int32_t need = tl_model_arena_bytes(m);
    if (need < 0)
        return need;
    /* need >= round8(in_0) + round8(out_0) + scratch_0 and is a multiple of 8: the input ends the
     * region, 8-aligned, past layer 0's output and scratch (see tl_arena_output). */
    return need - ((tl_layer_in_bytes(&m->layers[0]) + 7) & ~7);
}

int32_t tl_model_bp_activation_bytes(const tl_model *m)
{
    if (!m || !m->layers || m->n_layers < 1 || m->n_layers > TL_MAX_LAYERS)
        return TL_ERR_ARG;
    int32_t r = tl_layer_in_bytes(&m->layers[0]);
    for (int32_t i = 0; i < m->n_layers; i++)
        r += tl_layer_out_bytes(&m->layers[i]);
    return r;
}

int32_t tl_model_max_layer_bytes(const tl_model *m)
{
    if (!m || !m->layers || m->n_layers < 1 || m->n_layers > TL_MAX_LAYERS)
        return TL_ERR_ARG;
    int32_t r = 0;
    for (int32_t i = 0; i < m->n_layers; i++)
        r = TL_MAX(r, tl_layer_in_bytes(&m->layers[i]) + tl_layer_out_bytes(&m->layers[i]));
    return r;
}

/* The arena of a prepared model (checked against its plan) and its fast part. */
tl_status tl_arena_split(const tl_model *m, const tl_ctx *arena, tl_arena *a)
{
    if (!arena || !arena->buf || ((uintptr_t)arena->buf & 7u))
        return TL_ERR_ARG;
    const int32_t need = tl_model_arena_bytes(m);
    if (need < 0)
        return need;
    if (arena->size < need)
        return TL_ERR_ARENA;
    a->act = (int8_t *)arena->buf;
    a->act_size = need;
    a->wacc = NULL;
    a->signal = NULL;
    a->delta = NULL;
    /* room past the plan: the host fast paths' buffers, their start aligned to TL_FAST_ALIGN (the
     * plan is only a multiple of 8, the vector stores want 16 to 64) */
    const int32_t fast = fast_bytes();
    const int room = fast > 0 && arena->size - need >= fast;
    const uintptr_t start = ((uintptr_t)(a->act + need) + TL_FAST_ALIGN - 1) & ~(uintptr_t)(TL_FAST_ALIGN - 1);
    a->fast = room ? (void *)start : NULL;
    a->fast_size = room ? fast - TL_FAST_ALIGN : 0;
    return TL_OK;
}

/* Layer i's output sits at the start of the arena for even i and at its end for odd i, so it never
 * meets its input (the previous output, at the other end); the layer's training scratch goes in
 * the gap between them, which the planner made large enough. */
int8_t *tl_arena_output(tl_arena *a, const tl_model *m, int32_t layer)
{
    const int32_t in = layer == 0 ? 0 : (tl_layer_in_bytes(&m->layers[layer]) + 7) & ~7;
    const int32_t out = (tl_layer_out_bytes(&m->layers[layer]) + 7) & ~7;
    int32_t w, g, d;
    scratch_bytes(m, layer, &w, &g, &d);
    uint8_t *gap = (uint8_t *)a->act + (layer % 2 == 0 ? out : in);
    a->wacc = (int64_t *)(void *)gap;
    a->signal = (int32_t *)(void *)(gap + w);
    a->delta = (int16_t *)(void *)(gap + w + g);
    if (layer % 2 == 0)
        return a->act;
    return a->act + a->act_size - tl_layer_out_bytes(&m->layers[layer]);
}

/* ---------------------------------------------------------------- forward */
/* tl_layer_forward with the arena's fast buffers (scratch, or NULL) for the kernels that use them */
static tl_status layer_forward(const tl_layer *L, const int8_t *in, int8_t *out, const tl_ctx *scratch)
{
    const tl_conv_params p = {L->in_zp, L->out_zp, L->stride_h, L->stride_w,
                              L->pad_top, L->pad_left, L->act_min, L->act_max, L->single_rounding != 0};
    const tl_quant q = {L->out_mult, L->out_shift};
    const tl_dims in_d = {1, L->in_h, L->in_w, L->in_c};
    const tl_dims out_d = {1, L->out_h, L->out_w, L->out_c};
    tl_status s = TL_ERR_UNSUPPORTED;
    switch (L->kind) {
    case TL_LAYER_CONV: {
        const tl_dims f = {L->out_c, L->k_h, L->k_w, L->in_c};
        if (tl_layer_is_pointwise(L))
            s = tl_pwconv_s8_ctx(scratch, &p, &q, &in_d, in, &f, L->weights, L->bias, &out_d, out);
        else
            s = tl_conv_s8_ctx(scratch, &p, &q, &in_d, in, &f, L->weights, L->bias, &out_d, out);
        break;
    }
    case TL_LAYER_DWCONV: {
        const tl_dims f = {1, L->k_h, L->k_w, L->out_c};
        s = tl_dwconv_s8(&p, &q, &in_d, in, &f, L->weights, L->bias, &out_d, out);
        break;
    }
    case TL_LAYER_FC:
        s = tl_fc_s8(&p, &q, 1, tl_layer_in_bytes(L), in, L->out_c, L->weights, L->bias, out);
        break;
    case TL_LAYER_AVGPOOL:
        s = tl_avgpool_s8(&p, L->k_h, L->k_w, &in_d, in, &out_d, out);
        break;
    }
    if (s != TL_OK || L->act != TL_ACT_LEAKY)
        return s;
    /* Fused LeakyReLU, applied in the output domain: values below the zero point are scaled by
     * the slope (leaky_mult, leaky_shift). The layer's act_min is -128 for this activation. */
    const int32_t n = tl_layer_out_bytes(L);
    for (int32_t i = 0; i < n; i++) {
        const int32_t v = (int32_t)out[i] - L->out_zp;
        if (v < 0) {
            const int32_t r = tl_requantize(v, L->leaky_mult, L->leaky_shift) + L->out_zp;
            out[i] = (int8_t)TL_CLAMP(r, L->act_min, L->act_max);
        }
    }
    return TL_OK;
}

tl_status tl_layer_forward(const tl_layer *L, const int8_t *in, int8_t *out)
{
    return layer_forward(L, in, out, NULL);
}

/* ---------------------------------------------------------------- infer / train */
#ifdef TL_PROFILE
/* what the firmware's sampling profiler (firmware/app/profile.c) attributes its samples to:
 * 2 layer for the layer's forward pass, 2 layer + 1 for its local learning */
extern volatile int32_t tl_prof_layer;
#define TL_PROF_PHASE(v) (tl_prof_layer = (v))
#else
#define TL_PROF_PHASE(v) ((void)0)
#endif
/* Layers [lo, hi) on a split arena: tl_model_step_layers without its checks. */
static tl_status step_layers(tl_model *m, tl_arena *a, int32_t lo, int32_t hi, const int8_t *in, int32_t label,
                             int32_t train, int32_t with_local, tl_result *res, const int8_t **last_out)
{
    tl_ctx fast;
    fast.buf = a->fast;
    fast.size = a->fast_size;
    for (int32_t i = lo; i < hi; i++) {
        tl_layer *L = &m->layers[i];
        int8_t *out = tl_arena_output(a, m, i);
        TL_PROF_PHASE(2 * i);
        tl_status s = layer_forward(L, in, out, a->fast ? &fast : NULL);
        TL_PROF_PHASE(2 * i + 1);
        if (s != TL_OK)
            return s;
        if (i == m->n_layers - 1) {
            s = tl_train_classifier(m, i, a, in, out, label, train && L->trainable, &res->pred,
                                    &res->local_loss_q16[i], NULL, NULL);
            res->local_pred[i] = res->pred;
            for (int32_t c = 0; c < m->classes; c++)
                res->logits[c] = out[c];
        } else if (L->kind != TL_LAYER_AVGPOOL && (with_local || (train && L->trainable))) {
            s = tl_train_hidden(m, i, a, in, out, label, train && L->trainable, &res->local_pred[i],
                                &res->local_loss_q16[i], NULL, NULL);
        }
        if (s != TL_OK)
            return s;
        in = out;
    }
    *last_out = in;
    return TL_OK;
}

tl_status tl_model_step_layers(tl_model *m, const tl_ctx *arena, int32_t lo, int32_t hi, const int8_t *in,
                               int32_t label, int32_t train, int32_t with_local, tl_result *res,
                               const int8_t **out)
{
    if (!m || !in || !res || !out)
        return TL_ERR_ARG;
    tl_arena a;
    tl_status s = tl_arena_split(m, arena, &a);
    if (s != TL_OK)
        return s;
    if (lo < 0 || hi > m->n_layers || lo >= hi)
        return TL_ERR_ARG;
    if (train && (label < 0 || label >= m->classes))
        return TL_ERR_LABEL;
    return step_layers(m, &a, lo, hi, in, label, train, with_local, res, out);
}

tl_status tl_pass_begin(const tl_model *m, const tl_ctx *arena, const int8_t *input, tl_result *res,
                        tl_arena *a)
{
    if (!m || !input || !res)
        return TL_ERR_ARG;
    tl_status s = tl_arena_split(m, arena, a); /* a prepared model and a large enough arena */
    if (s != TL_OK)
        return s;
    res->n_layers = m->n_layers;
    res->pred = -1;
    for (int32_t i = 0; i < TL_MAX_LAYERS; i++) {
        res->local_pred[i] = -1;
        res->local_loss_q16[i] = -1;
    }
    return TL_OK;
}

static tl_status run(tl_model *m, const tl_ctx *arena, const int8_t *input, int32_t label,
                     int32_t train, int32_t with_local, tl_result *res)
{
    tl_arena a;
    tl_status s = tl_pass_begin(m, arena, input, res, &a);
    if (s != TL_OK)
        return s;
    if (train && (label < 0 || label >= m->classes))
        return TL_ERR_LABEL;
    if (train) {
        int32_t any = 0;
        for (int32_t i = 0; i < m->n_layers; i++)
            any |= m->layers[i].trainable;
        if (!any)
            return TL_ERR_FROZEN;
    }
    const int8_t *out;
    s = step_layers(m, &a, 0, m->n_layers, input, label, train, with_local, res, &out);
    if (s != TL_OK)
        return s;
    if (train)
        m->step++;
    return TL_OK;
}

tl_status tl_model_infer(tl_model *m, const tl_ctx *arena, const int8_t *input, int32_t with_local,
                         tl_result *res)
{
    return run(m, arena, input, -1, 0, with_local, res);
}

tl_status tl_model_train_step(tl_model *m, const tl_ctx *arena, const int8_t *input, int32_t label,
                              tl_result *res)
{
    return run(m, arena, input, label, 1, 1, res);
}

tl_status tl_layer_update_preview(const tl_model *m, int32_t layer, const tl_ctx *arena,
                                  const int8_t *layer_input, int32_t label,
                                  int64_t *dw_q16, int64_t *db_q16)
{
    if (!m || !layer_input || !dw_q16 || !db_q16)
        return TL_ERR_ARG;
    tl_arena a;
    tl_status s = tl_arena_split(m, arena, &a);
    if (s != TL_OK)
        return s;
    if (layer < 0 || layer >= m->n_layers)
        return TL_ERR_ARG;
    if (label < 0 || label >= m->classes)
        return TL_ERR_LABEL;
    tl_layer *L = &m->layers[layer];
    if (L->kind == TL_LAYER_AVGPOOL || !L->trainable)
        return TL_ERR_ARG;
    /* the output goes where the layer's output would go in a real step; the input is the caller's */
    int8_t *out = tl_arena_output(&a, m, layer);
    s = tl_layer_forward(L, layer_input, out);
    if (s != TL_OK)
        return s;
    int32_t pred, loss;
    /* preview mode writes nothing to the model: the head takes a copy of the struct, whose layer
     * table it only reads */
    tl_model mm = *m;
    if (layer == m->n_layers - 1)
        return tl_train_classifier(&mm, layer, &a, layer_input, out, label, 1, &pred, &loss, dw_q16, db_q16);
    return tl_train_hidden(&mm, layer, &a, layer_input, out, label, 1, &pred, &loss, dw_q16, db_q16);
}
