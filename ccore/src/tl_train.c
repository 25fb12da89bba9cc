/* LLS training in integers: the local head of a layer (pool -> L2 normalise -> project on a fixed
 * basis -> softmax -> error -> learning signal) and the layer's weight update, plus softmax
 * cross-entropy for the last layer. See ../shared/notes/lls.md for the float rule.
 *
 * Number formats along the way (h = layer output, zp its zero point):
 *   P_t   int32   pooled sums of (h - zp) over each pooling cell (scale-free: normalisation
 *                 cancels the activation scale and the cell size)
 *   n     uint32  floor(||P||), integer square root of an int64 sum of squares
 *   a_c   Q16     projection h^ . b_c = sum_t P_t b_c[t] / n      (basis in Q15)
 *   z_c   Q16     logits a_c / tau (times the LLS-M / MxM modulation)
 *   p_c   Q24     softmax; e_c = p_c - onehot in Q24; w_c = dL/da_c in Q24
 *   g_t   Q24     dL/dh^_t = sum_c w_c b_c[t]
 *   u_t   Q24     g_t - (g . h^) h^_t             (back through the normalisation, times n)
 *   d_t   int32   u_t / n as a block-floating-point vector: d_t * 2^-E = u_t / n, |d_t| < 2^30;
 *                 each output channel takes its slice to int16 with its own exponent
 * The real gradient of the local loss w.r.t. the layer's real output is d_t 2^-E / s_out, and
 * the per-channel factors s_in / (s_out s_w[c]) (host: Layer.update_reals) turn it into weight
 * LSBs. Updates are scaled by those factors and the layer's learning rate, then rounded
 * stochastically with a counter-based random stream (unbiased, so sub-LSB progress survives in
 * expectation) and saturated to [-127, 127]. */
#include "tl_train.h"

/* ---------------------------------------------------------------- basis */
#define TL_K50 34178263779ULL   /* round(50 / (2 pi) * 2^32): 50 rad per element, in Q32 turns */
#define TL_K462 315807157316ULL /* round(462 / (2 pi) * 2^32) */

/* f_c = linspace(50, 512, C)[c] rad/element as a Q32 phase increment (mod one turn). */
static uint32_t basis_increment(int32_t c, int32_t classes)
{
    uint64_t inc = TL_K50;
    if (classes > 1)
        inc += (TL_K462 * (uint64_t)c) / (uint64_t)(classes - 1);
    return (uint32_t)inc;
}

static int32_t basis_value(int32_t basis, uint32_t seed, uint32_t inc, int32_t c, int32_t t)
{
    if (basis == TL_BASIS_RANDOM)
        return (tl_rand4(seed, 0x6261u, (uint32_t)c, (uint32_t)t) & 1u) ? TL_BASIS_ONE : -TL_BASIS_ONE;
    const uint32_t phase = inc * (uint32_t)t; /* exact modular arithmetic in turns */
    if (basis == TL_BASIS_SINE)
        return tl_sin_turns_q15(phase);
    if (phase == 0u || phase == 0x80000000u)
        return 0;
    return phase < 0x80000000u ? TL_BASIS_ONE : -TL_BASIS_ONE;
}

int32_t tl_basis_q15(int32_t basis, uint32_t basis_seed, int32_t c, int32_t classes, int32_t t)
{
    if (classes < 1 || c < 0 || c >= classes || t < 0)
        return 0;
    return basis_value(basis, basis_seed, basis_increment(c, classes), c, t);
}

/* ---------------------------------------------------------------- softmax */
/* z (Q16) -> p (Q24); returns the argmax (first on ties); loss (Q16) for label >= 0. */
static int32_t softmax(const int32_t *z, int32_t classes, int32_t label, int32_t *p, int32_t *loss)
{
    int32_t best = 0;
    for (int32_t c = 1; c < classes; c++)
        if (z[c] > z[best])
            best = c;
    const int32_t zmax = z[best];
    int64_t sum = 0;
    for (int32_t c = 0; c < classes; c++) {
        p[c] = tl_exp_q16_to_q24(z[c] - zmax);
        sum += p[c];
    }
    /* -ln p_y = (zmax - z_y) + ln(sum exp(z - zmax)), exact even when p_y underflows */
    if (label >= 0)
        *loss = (zmax - z[label]) + tl_ln_ratio_q16((uint64_t)sum, (uint64_t)TL_Q24_ONE);
    for (int32_t c = 0; c < classes; c++)
        p[c] = (int32_t)tl_div_round((int64_t)p[c] << 24, sum);
    return best;
}

/* ---------------------------------------------------------------- update scaling */
static int bit_length(uint64_t v)
{
    int n = 0;
    while (v) {
        v >>= 1;
        n++;
    }
    return n;
}

/* acc * mult * 2^(shift - 31 - E) as an int64, rounded stochastically with the random word rnd
 * (or to nearest); with q16 != NULL also the unrounded value in Q16. */
static int64_t scale_update(int64_t acc, int32_t mult, int32_t shift, int32_t E, int32_t rounding,
                            uint32_t rnd, int64_t *q16)
{
    if (acc == 0 || mult == 0) {
        if (q16)
            *q16 = 0;
        return 0;
    }
    const uint64_t mag = acc < 0 ? (uint64_t)(-acc) : (uint64_t)acc;
    const int k = TL_MAX(0, bit_length(mag) - 31); /* keep |acc| < 2^31 so acc*mult fits */
    int64_t prod = tl_shr_round(acc, k) * (int64_t)mult;
    int32_t r = 31 + E - shift - k;
    if (q16)
        *q16 = r >= 16 ? tl_shr_round(prod, TL_MIN(r - 16, 62)) : prod * ((int64_t)1 << TL_MIN(16 - r, 20));
    if (r <= 0) {
        const int64_t lim = (int64_t)1 << 40;
        const int64_t v = r < -20 ? (prod < 0 ? -lim : lim) : prod * ((int64_t)1 << -r);
        return TL_CLAMP(v, -lim, lim);
    }
    if (r > 62) {
        prod >>= (r - 62);
        r = 62;
    }
    const int64_t fl = prod >> r;
    const uint64_t frac = (uint64_t)(prod - fl * ((int64_t)1 << r)); /* in [0, 2^r) */
    if (rounding == TL_ROUND_NEAREST)
        return fl + (frac >= ((uint64_t)1 << (r - 1)) ? 1 : 0);
    /* round up with probability frac / 2^r, from the top 32 bits of the fraction */
    const uint32_t top = r >= 32 ? (uint32_t)(frac >> (r - 32)) : (uint32_t)(frac << (32 - r));
    return fl + (rnd < top ? 1 : 0);
}

/* The product of the layer's learning rate and a per-channel factor, both quantized multipliers. */
static void combine(int32_t m1, int32_t s1, int32_t m2, int32_t s2, int32_t *m, int32_t *s)
{
    *m = (int32_t)tl_shr_round((int64_t)m1 * m2, 31);
    *s = s1 + s2;
}

/* ---------------------------------------------------------------- the weight update */
/* Applies (or previews) the update of layer i given its learning signal: delta(pos, c) = d_t(pos,c)
 * * f'(h) with t from the pooling grid (hidden) or t = c (classifier), exponent E. */
static void update_layer(tl_model *m, int32_t i, const tl_arena *a, const int8_t *in,
                         const int8_t *out, int32_t E, int classifier,
                         int64_t *dw_preview, int64_t *db_preview)
{
    tl_layer *L = &m->layers[i];
    const int32_t *d = a->signal;
    int16_t *delta = a->delta;
    const int32_t oh = L->out_h, ow = L->out_w, oc = L->out_c;
    const int32_t p = classifier ? 1 : L->pool;
    const int32_t bh = oh / p, bw = ow / p;
    const int32_t n_w = tl_layer_n_weights(L);
    const uint32_t seed = m->cfg.seed, step = m->step;
    /* Biases stay where no accumulator can overflow int32: |bias| + taps * 255 * 128 <= INT32_MAX,
     * the bound the model-file loader enforces, so a trained model always reloads. */
    const int64_t taps = L->kind == TL_LAYER_DWCONV ? (int64_t)L->k_h * L->k_w
                       : L->kind == TL_LAYER_FC ? (int64_t)tl_layer_in_bytes(L)
                       : (int64_t)L->k_h * L->k_w * L->in_c;
    const int64_t bias_bound = TL_MAX(0, (int64_t)INT32_MAX - taps * 255 * 128);
    for (int32_t c = 0; c < oc; c++) {
        /* channel c's own block exponent: its signals may be far below the layer's largest, so
         * each channel rescales its slice of the 30-bit signal to 15 bits before the int16 map */
        const int32_t t0 = classifier ? c : c * p * p, nt = classifier ? 1 : p * p;
        uint32_t cmax = 0;
        for (int32_t t = t0; t < t0 + nt; t++)
            cmax |= (uint32_t)(d[t] < 0 ? -d[t] : d[t]);
        const int32_t rs = TL_MAX(0, bit_length(cmax) - 15);
        const int32_t Ec = E - rs;
        /* delta map of channel c and the bias accumulator */
        int64_t acc_b = 0;
        int32_t nonzero = 0;
        for (int32_t oy = 0; oy < oh; oy++) {
            for (int32_t ox = 0; ox < ow; ox++) {
                const int32_t t = classifier ? c : c * p * p + (oy / bh) * p + ox / bw;
                const int32_t h = out[(oy * ow + ox) * oc + c];
                int32_t v = (int32_t)TL_CLAMP(tl_shr_round(d[t], rs), -32767, 32767);
                if (!classifier) {
                    /* f'(z) read off the stored output: 0 where the clamp (ReLU, ReLU6, int8
                     * saturation) was active, the slope below zero for LeakyReLU */
                    if (h <= L->act_min || h >= L->act_max)
                        v = 0;
                    else if (L->act == TL_ACT_LEAKY && h < L->out_zp)
                        v = tl_requantize(v, L->leaky_mult, L->leaky_shift);
                }
                delta[oy * ow + ox] = (int16_t)v;
                acc_b += v;
                nonzero |= v;
            }
        }
        if (!nonzero && !dw_preview)
            continue;
        int32_t wm, ws, bm, bs;
        combine(L->upd_mult[c], L->upd_shift[c], L->lr_mult, L->lr_shift, &wm, &ws);
        combine(L->bupd_mult[c], L->bupd_shift[c], L->lr_mult, L->lr_shift, &bm, &bs);
        /* weights of channel c: index, input channel range and the gradient correlation */
        const int32_t kh = L->k_h, kw = L->k_w;
        if (L->kind == TL_LAYER_FC) {
            const int32_t in_n = tl_layer_in_bytes(L);
            for (int32_t k = 0; k < in_n; k++) {
                const int64_t acc = (int64_t)delta[0] * ((int32_t)in[k] - L->in_zp);
                const int32_t idx = c * in_n + k;
                int64_t q16;
                const int64_t dw = scale_update(acc, wm, ws, Ec, m->cfg.rounding,
                                                tl_rand4(seed, step, (uint32_t)i, (uint32_t)idx),
                                                dw_preview ? &q16 : NULL);
                if (dw_preview)
                    dw_preview[idx] = -q16;
                else
                    L->weights[idx] = (int8_t)TL_CLAMP((int64_t)L->weights[idx] - dw, -127, 127);
            }
        } else if (tl_layer_is_pointwise(L)) {
            /* 1x1: dW[c][i] = sum_pos delta(pos) (x(pos, i) - zp), accumulated over positions into
             * a row of int64 so the inner loop runs along contiguous input channels; the zero
             * point comes out as zp * sum(delta) = zp * acc_b, exactly. */
            const int32_t ic = L->in_c;
            int64_t *acc = a->wacc;
            for (int32_t j = 0; j < ic; j++)
                acc[j] = 0;
            for (int32_t pos = 0; pos < oh * ow; pos++) {
                const int32_t dv = delta[pos];
                if (dv == 0)
                    continue;
                const int8_t *x = in + pos * ic;
                for (int32_t j = 0; j < ic; j++)
                    acc[j] += (int64_t)(dv * (int32_t)x[j]);
            }
            for (int32_t j = 0; j < ic; j++) {
                const int32_t idx = c * ic + j;
                int64_t q16;
                const int64_t dw = scale_update(acc[j] - (int64_t)L->in_zp * acc_b, wm, ws, Ec, m->cfg.rounding,
                                                tl_rand4(seed, step, (uint32_t)i, (uint32_t)idx),
                                                dw_preview ? &q16 : NULL);
                if (dw_preview)
                    dw_preview[idx] = -q16;
                else
                    L->weights[idx] = (int8_t)TL_CLAMP((int64_t)L->weights[idx] - dw, -127, 127);
            }
        } else {
            const int dw_kind = L->kind == TL_LAYER_DWCONV;
            const int32_t ic = L->in_c, iw = L->in_w, ih = L->in_h;
            const int32_t n_ci = dw_kind ? 1 : ic;
            for (int32_t fy = 0; fy < kh; fy++) {
                for (int32_t fx = 0; fx < kw; fx++) {
                    for (int32_t j = 0; j < n_ci; j++) {
                        const int32_t ci = dw_kind ? c : j;
                        int64_t acc = 0;
                        for (int32_t oy = 0; oy < oh; oy++) {
                            const int32_t y = oy * L->stride_h - L->pad_top + fy;
                            if (y < 0 || y >= ih)
                                continue;
                            for (int32_t ox = 0; ox < ow; ox++) {
                                const int32_t x = ox * L->stride_w - L->pad_left + fx;
                                const int32_t dv = delta[oy * ow + ox];
                                if (x < 0 || x >= iw || dv == 0)
                                    continue;
                                acc += (int64_t)dv * ((int32_t)in[(y * iw + x) * ic + ci] - L->in_zp);
                            }
                        }
                        const int32_t idx = dw_kind ? (fy * kw + fx) * oc + c
                                                    : ((c * kh + fy) * kw + fx) * ic + j;
                        int64_t q16;
                        const int64_t dw = scale_update(acc, wm, ws, Ec, m->cfg.rounding,
                                                        tl_rand4(seed, step, (uint32_t)i, (uint32_t)idx),
                                                        dw_preview ? &q16 : NULL);
                        if (dw_preview)
                            dw_preview[idx] = -q16;
                        else
                            L->weights[idx] = (int8_t)TL_CLAMP((int64_t)L->weights[idx] - dw, -127, 127);
                    }
                }
            }
        }
        int64_t q16;
        const int64_t db = scale_update(acc_b, bm, bs, Ec, m->cfg.rounding,
                                        tl_rand4(seed, step, (uint32_t)i, (uint32_t)(n_w + c)),
                                        db_preview ? &q16 : NULL);
        if (db_preview)
            db_preview[c] = -q16;
        else
            L->bias[c] = (int32_t)TL_CLAMP((int64_t)L->bias[c] - db, -bias_bound, bias_bound);
    }
}

/* The block floating-point learning signal: returns s such that d = round(u 2^s / n) has
 * max |d| < 2^30 (30 bits of precision for the layer's largest element). */
static int32_t block_exponent(uint64_t umax, uint64_t n)
{
    const uint64_t target = ((uint64_t)1 << 30) * n - n;
    int32_t s = 0;
    if (umax <= target) {
        while (s < 40 && (umax << (s + 1)) <= target)
            s++;
    } else {
        while (s > -40 && umax > (target << -s))
            s--;
    }
    return s;
}

static int32_t scale_signal(int64_t u, int32_t s, uint32_t n)
{
    return (int32_t)(s >= 0 ? tl_div_round(u * ((int64_t)1 << s), n)
                            : tl_div_round(u, (int64_t)n << -s));
}

/* ---------------------------------------------------------------- hidden layers: LLS */
tl_status tl_train_hidden(tl_model *m, int32_t i, const tl_arena *a, const int8_t *in,
                          const int8_t *out, int32_t label, int32_t update,
                          int32_t *pred, int32_t *loss_q16, int64_t *dw_preview, int64_t *db_preview)
{
    tl_layer *L = &m->layers[i];
    const int32_t C = m->classes, p = L->pool;
    const int32_t oh = L->out_h, ow = L->out_w, oc = L->out_c;
    const int32_t bh = oh / p, bw = ow / p, T = oc * p * p;
    const int32_t basis = m->cfg.basis, inv_tau = m->cfg.inv_tau_q8, variant = m->cfg.variant;
    const uint32_t bseed = m->cfg.basis_seed;
    int32_t *P = a->signal;
    uint32_t inc[TL_MAX_CLASSES];
    int32_t acoef[TL_MAX_CLASSES] = {0}, z[TL_MAX_CLASSES] = {0}, prob[TL_MAX_CLASSES], w[TL_MAX_CLASSES];

    /* 1. pool: P_t = sum of (h - zp) over the cell, channel-major t = c p^2 + y p + x */
    for (int32_t t = 0; t < T; t++)
        P[t] = 0;
    for (int32_t oy = 0; oy < oh; oy++)
        for (int32_t ox = 0; ox < ow; ox++) {
            const int8_t *h = out + (oy * ow + ox) * oc;
            const int32_t cell = (oy / bh) * p + ox / bw;
            for (int32_t c = 0; c < oc; c++)
                P[c * p * p + cell] += (int32_t)h[c] - L->out_zp;
        }
    /* 2. normalise */
    uint64_t sumsq = 0;
    for (int32_t t = 0; t < T; t++)
        sumsq += (uint64_t)((int64_t)P[t] * P[t]);
    const uint32_t n = tl_isqrt64(sumsq);
    if (n == 0) {
        /* a dead layer (all outputs at the zero point) has no direction to learn from */
        *pred = -1;
        *loss_q16 = label >= 0 ? tl_ln_ratio_q16((uint64_t)C, 1) : -1;
        return TL_OK;
    }
    /* 3. project and 4. local softmax */
    for (int32_t c = 0; c < C; c++) {
        inc[c] = basis_increment(c, C);
        int64_t S = 0;
        for (int32_t t = 0; t < T; t++)
            S += (int64_t)P[t] * basis_value(basis, bseed, inc[c], c, t);
        acoef[c] = (int32_t)tl_div_round(S * 2, n); /* S has Q15: S 2^16 / (2^15 n) */
    }
    for (int32_t j = 0; j < C; j++) {
        int64_t v = acoef[j];
        if (variant == TL_LLS_M) {
            v = tl_shr_round(v * L->lls_m[j], 16);
        } else if (variant == TL_LLS_MXM) {
            v = 0;
            for (int32_t c = 0; c < C; c++)
                v += (int64_t)acoef[c] * L->lls_m[c * C + j];
            v = tl_shr_round(v, 16);
        }
        v = tl_shr_round(v * inv_tau, 8);
        z[j] = (int32_t)TL_CLAMP(v, -(int64_t)INT32_MAX / 2, (int64_t)INT32_MAX / 2);
    }
    int32_t loss = -1;
    *pred = softmax(z, C, label, prob, &loss);
    *loss_q16 = loss;
    if (!update || label < 0)
        return TL_OK;

    /* 5. error, and its gradient w.r.t. the projections a_c (w_c, Q24, 1/tau included) */
    int32_t e[TL_MAX_CLASSES];
    for (int32_t c = 0; c < C; c++)
        e[c] = prob[c] - (c == label ? TL_Q24_ONE : 0);
    for (int32_t c = 0; c < C; c++) {
        int64_t v = e[c];
        if (variant == TL_LLS_M) {
            v = tl_shr_round(v * L->lls_m[c], 16);
        } else if (variant == TL_LLS_MXM) {
            v = 0;
            for (int32_t j = 0; j < C; j++)
                v += (int64_t)L->lls_m[c * C + j] * e[j];
            v = tl_shr_round(v, 16);
        }
        w[c] = (int32_t)TL_CLAMP(tl_shr_round(v * inv_tau, 8), -(int64_t)INT32_MAX / 2, (int64_t)INT32_MAX / 2);
    }
    /* the modulation's own gradient, dL/dM = a (x) e / tau, applied now (after w used the old M) */
    if (variant != TL_LLS_PLAIN && !dw_preview) {
        const int32_t nm = variant == TL_LLS_M ? C : C * C;
        for (int32_t k = 0; k < nm; k++) {
            const int32_t cc = variant == TL_LLS_M ? k : k / C, jj = variant == TL_LLS_M ? k : k % C;
            const int64_t grad = tl_shr_round(tl_shr_round((int64_t)acoef[cc] * e[jj], 24) * inv_tau, 8); /* Q16 */
            const int64_t dm = scale_update(grad, L->lls_m_lr_mult, L->lls_m_lr_shift, 0, m->cfg.rounding,
                                            tl_rand4(m->cfg.seed, m->step, 0x4D00u + (uint32_t)i, (uint32_t)k), NULL);
            L->lls_m[k] = (int32_t)TL_CLAMP((int64_t)L->lls_m[k] - dm, -(1 << 24), 1 << 24);
        }
    }
    /* 6. back through projection (g), normalisation (u): three passes over T so that only the
     *    pooled vector is stored; g is recomputed from the basis instead of being kept. */
    int64_t gh = 0;
    for (int32_t t = 0; t < T; t++) {
        int64_t g = 0;
        for (int32_t c = 0; c < C; c++)
            g += (int64_t)w[c] * basis_value(basis, bseed, inc[c], c, t);
        gh += tl_shr_round(g, 15) * P[t];
    }
    const int64_t gdot = tl_div_round(gh, n); /* g . h^, Q24 */
    uint64_t umax = 0;
    for (int32_t t = 0; t < T; t++) {
        int64_t g = 0;
        for (int32_t c = 0; c < C; c++)
            g += (int64_t)w[c] * basis_value(basis, bseed, inc[c], c, t);
        const int64_t u = tl_shr_round(g, 15) - tl_div_round(gdot * P[t], n);
        const uint64_t mag = u < 0 ? (uint64_t)(-u) : (uint64_t)u;
        umax = TL_MAX(umax, mag);
    }
    if (umax == 0)
        return TL_OK;
    const int32_t s = block_exponent(umax, n);
    for (int32_t t = 0; t < T; t++) {
        int64_t g = 0;
        for (int32_t c = 0; c < C; c++)
            g += (int64_t)w[c] * basis_value(basis, bseed, inc[c], c, t);
        const int64_t u = tl_shr_round(g, 15) - tl_div_round(gdot * P[t], n);
        P[t] = scale_signal(u, s, n); /* overwrites P_t, which this t no longer needs */
    }
    /* 7. the update: real signal d 2^-(24+s) */
    update_layer(m, i, a, in, out, 24 + s, 0, dw_preview, db_preview);
    return TL_OK;
}

/* ---------------------------------------------------------------- last layer: cross-entropy */
tl_status tl_train_classifier(tl_model *m, int32_t i, const tl_arena *a, const int8_t *in,
                              const int8_t *out, int32_t label, int32_t update,
                              int32_t *pred, int32_t *loss_q16, int64_t *dw_preview, int64_t *db_preview)
{
    tl_layer *L = &m->layers[i];
    const int32_t C = m->classes;
    int32_t z[TL_MAX_CLASSES] = {0}, prob[TL_MAX_CLASSES];
    /* logits in Q16: (q - zp) s_out 2^16, s_out = logit_mult 2^(logit_shift - 31) */
    for (int32_t c = 0; c < C; c++) {
        const int64_t v = (int64_t)((int32_t)out[c] - L->out_zp) * L->logit_mult;
        const int32_t sh = 15 - L->logit_shift;
        const int64_t zq = sh >= 0 ? tl_shr_round(v, TL_MIN(sh, 62)) : v * ((int64_t)1 << TL_MIN(-sh, 16));
        z[c] = (int32_t)TL_CLAMP(zq, -(int64_t)INT32_MAX / 2, (int64_t)INT32_MAX / 2);
    }
    if (L->logit_mult == 0) /* no logit scale: rank by the raw outputs */
        for (int32_t c = 0; c < C; c++)
            z[c] = (int32_t)out[c] << 8;
    int32_t loss = -1;
    *pred = softmax(z, C, label, prob, &loss);
    *loss_q16 = loss;
    if (!update || label < 0)
        return TL_OK;
    uint64_t umax = 0;
    int64_t e[TL_MAX_CLASSES];
    for (int32_t c = 0; c < C; c++) {
        e[c] = prob[c] - (c == label ? TL_Q24_ONE : 0);
        umax = TL_MAX(umax, (uint64_t)(e[c] < 0 ? -e[c] : e[c]));
    }
    if (umax == 0)
        return TL_OK;
    const int32_t s = block_exponent(umax, 1);
    for (int32_t c = 0; c < C; c++)
        a->signal[c] = scale_signal(e[c], s, 1);
    update_layer(m, i, a, in, out, 24 + s, 1, dw_preview, db_preview);
    return TL_OK;
}
